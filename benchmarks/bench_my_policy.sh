#!/usr/bin/env bash
# examples/my_policy.py (ConvChunkPolicy) vs the built-in mlp on the demo's v1 setup, through the CLI:
# 50 scripted demonstrations at yaw 0 (lighting normal / dim), selection `outcome.success` with 10% holdout,
# 150 epochs each (the demo's), both evaluated on the demo's grid 'yaw=none,any lighting=normal,dim' with
# the same cells and seeds (seeds are a function of the cell key and the index).
#
#   PYTHONPATH=src:examples bash benchmarks/bench_my_policy.sh [WORKSPACE] [EPISODES_PER_CELL]
#
# Cameras are not recorded (both policies are state policies; rendering changes no physics).
set -euo pipefail
WS=${1:-/tmp/bench-my-policy}
N=${2:-20}
RL="python -m roboloop.cli --workspace $WS"
GRID='yaw=none,any lighting=normal,dim'
export ROBOLOOP_CATALOG=""
$RL collect -d aloha -n 25 --yaw none --lighting normal --cameras "" --workers 2
$RL collect -d aloha -n 25 --yaw none --lighting dim --cameras "" --workers 2
$RL curate -d aloha -n v1 --where 'outcome.success' --holdout 0.1
for P in mlp my_policy:ConvChunkPolicy; do
  /usr/bin/time -f "train $P: %e s wall, %U s user" $RL train -d aloha -s v1 --policy "$P" --epochs 150
done
for RUN in $(python -c "from roboloop.train import list_runs; print(' '.join(r['run_id'] for r in reversed(list_runs('$WS'))))"); do
  /usr/bin/time -f "eval $RUN: %e s wall" $RL eval --run "$RUN" -d aloha --grid "$GRID" -n "$N" --cameras "" --workers 2 --name "eval-$RUN"
done
$RL success -d aloha_evals --by episode.policy,scene.yaw
$RL compare "eval-$(python -c "from roboloop.train import list_runs; print(list_runs('$WS')[-1]['run_id'])")" \
            "eval-$(python -c "from roboloop.train import list_runs; print(list_runs('$WS')[0]['run_id'])")"
