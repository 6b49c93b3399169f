"""Your robot in the loop: record a made-up robot's episodes with `roboloop.record`, then curate, stream and train
on them with the stock commands. No simulator, no ALOHA.

The robot: a 5-DoF arm with a gripper (6 joints) driven at 20 Hz by a scripted "teleoperator" that reaches for a
block, closes the gripper and lifts; a 64x48 camera (numpy frames: the block and the gripper moving over a table
whose brightness follows the lighting). Each episode records

    /robot/joint_positions   20 Hz   6 measured joints (named)
    /robot/joint_targets     20 Hz   6 commanded joints: the action
    /robot/gripper_force     20 Hz   1 value
    /cameras/wrist           10 Hz   H.264 video
    /world/arm/tool          20 Hz   3D pose of the tool
    /events                  events  text ("grasp", "lift")

and properties `episode.operator`, `episode.tags`, `scene.lighting`, `scene.block_x`, `scene.block_y` and the
operator's judgement `outcome.success`. One episode is cut short by an "e-stop" and kept as aborted.

The stock commands (`roboloop curate`, `roboloop train`, `roboloop runs`) run through the command's own Python
entry point, `roboloop.cli.app`: each is exactly what the same line typed in a shell does.

Run it (a fresh workspace each time)::

    python examples/your_robot.py --workspace /tmp/your-robot
    python examples/your_robot.py --workspace /tmp/your-robot --episodes 4 --seconds 2 --epochs 1   # quick

Then look: `roboloop --workspace /tmp/your-robot serve` and open an episode in the viewer.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np
import rerun as rr

from roboloop import cli, curate, record
from roboloop.catalog import Catalog
from roboloop.stream import EpisodeStream, Field
from roboloop.workspace import Workspace

DATASET = "arm5"
HZ = 20
CAMERA_EVERY = 2  # the camera runs at 10 Hz
JOINTS = ["base_yaw", "shoulder", "elbow", "wrist_pitch", "wrist_roll", "gripper"]
LINKS = np.array([0.30, 0.25, 0.10])  # shoulder-elbow, elbow-wrist, wrist-tool (m)
W, H = 64, 48
WHERE = "outcome.success and not episode.aborted"


class EStop(RuntimeError):
    """The operator hit the emergency stop."""


# --- the made-up robot ----------------------------------------------------------------------------

def reach_pose(block: np.ndarray, height: float) -> np.ndarray:
    """Joint angles (5) that put the tool above `block` (x, y) at `height`: planar 2-link IK in the arm's plane."""
    yaw = np.arctan2(block[1], block[0])
    r, z = np.hypot(*block), height - 0.1
    a, b = LINKS[0], LINKS[1] + LINKS[2]
    c = np.clip((r * r + z * z - a * a - b * b) / (2 * a * b), -1.0, 1.0)
    elbow = np.arccos(c)
    shoulder = np.arctan2(z, r) + np.arctan2(b * np.sin(elbow), a + b * np.cos(elbow))
    return np.array([yaw, shoulder, -elbow, -0.5 * np.pi - shoulder + elbow, 0.0])


def tool_position(q: np.ndarray) -> np.ndarray:
    """Forward kinematics of the first three joints (x, y, z) in metres."""
    yaw, shoulder, elbow = q[0], q[1], q[2]
    r = LINKS[0] * np.cos(shoulder) + (LINKS[1] + LINKS[2]) * np.cos(shoulder + elbow)
    z = 0.1 + LINKS[0] * np.sin(shoulder) + (LINKS[1] + LINKS[2]) * np.sin(shoulder + elbow)
    return np.array([r * np.cos(yaw), r * np.sin(yaw), z])


def command(t: float, duration: float, block: np.ndarray) -> np.ndarray:
    """The teleoperator's joint targets at time t: approach, descend, grasp, lift."""
    home = np.array([0.0, 1.2, -2.0, 0.0, 0.0])
    above, at = reach_pose(block, 0.15), reach_pose(block, 0.03)
    s = t / duration
    if s < 0.4:
        arm = home + (above - home) * np.sin(0.5 * np.pi * s / 0.4)
    elif s < 0.6:
        arm = above + (at - above) * (s - 0.4) / 0.2
    elif s < 0.75:
        arm = at
    else:
        arm = at + (above - at) * (s - 0.75) / 0.25
    gripper = 1.0 if s < 0.6 else max(0.0, 1.0 - (s - 0.6) / 0.1)
    return np.append(arm, gripper)


def camera(q: np.ndarray, block: np.ndarray, lighting: str, rng: np.random.Generator) -> np.ndarray:
    """A 64x48 top view: the table (brightness by lighting), the block (red) and the tool (white, bigger when high)."""
    level = {"dim": 50, "normal": 110, "bright": 170}[lighting]
    img = np.full((H, W, 3), level, np.int16)
    img += rng.integers(-4, 5, size=img.shape, dtype=np.int16)

    def px(xy):
        return int(np.clip((xy[0] + 0.1) / 0.6 * W, 2, W - 3)), int(np.clip((xy[1] + 0.3) / 0.6 * H, 2, H - 3))

    bx, by = px(block)
    img[by - 2:by + 3, bx - 2:bx + 3] = (200, 30, 30)
    tool = tool_position(q)
    tx, ty = px(tool[:2])
    r = 1 + int(np.clip(tool[2] * 10, 0, 3))
    img[max(ty - r, 0):ty + r + 1, max(tx - r, 0):tx + r + 1] = (240, 240, 240)
    return np.clip(img, 0, 255).astype(np.uint8)


def run_episode(target, i: int, seconds: float, rng: np.random.Generator) -> record.Episode:
    """Drive the robot through one episode and record it; episode 5 hits the e-stop (kept, marked aborted)."""
    lighting = ("normal", "dim", "bright")[i % 3]
    operator = ("alice", "bob")[i % 2]
    block = np.array([rng.uniform(0.25, 0.4), rng.uniform(-0.15, 0.15)])
    slip = i % 5 == 3  # the grasp slips in one episode in five: the operator judges it a failure
    steps = int(seconds * HZ)
    q = np.append(np.array([0.0, 1.2, -2.0, 0.0, 0.0]), 1.0)
    # the episode number as its seed: segment ids and the train/holdout split (grouped by seed and scene) are reproducible
    ep = record.episode(target, DATASET, kind="demo", on_error="abort", task="pick_block", policy="teleop", seed=i)
    try:
        with ep:
            ep.set_properties("episode", {"operator": operator, "tags": ["example", f"batch{i // 4}"]})
            ep.set_properties("scene", {"lighting": lighting, "block_x": float(block[0]), "block_y": float(block[1])})
            ep.log_static("/world/block", rr.Boxes3D(centers=[[*block, 0.02]], half_sizes=[[0.02, 0.02, 0.02]],
                                                     colors=[[200, 30, 30]], fill_mode="solid"))
            ep.log_static("/world/arm/tool/gripper", rr.Boxes3D(half_sizes=[[0.015, 0.03, 0.02]], colors=[[230, 230, 230]]))
            for k in range(steps):
                t = k / HZ
                target_q = command(t, seconds, block)
                ep.log_scalars("/robot/joint_positions", t, q, names=JOINTS)
                ep.log_scalars("/robot/joint_targets", t, target_q, names=JOINTS)
                force = 5.0 * (1.0 - q[5]) * (0.2 if slip else 1.0)
                ep.log_scalars("/robot/gripper_force", t, force, names=["force_n"])
                ep.log_transform("/world/arm/tool", t, tool_position(q))
                if k % CAMERA_EVERY == 0:
                    ep.log_video_frame("/cameras/wrist", t, camera(q, block, lighting, rng))
                if k == int(0.6 * steps):
                    ep.log_text("/events", t, "grasp")
                if k == int(0.75 * steps):
                    ep.log_text("/events", t, "lift")
                if i == 5 and k == steps // 2:
                    raise EStop("operator pressed the e-stop")
                q = q + 0.5 * (target_q - q) + rng.normal(0, 0.002, 6)  # the arm lags its command
            ep.set_properties("outcome", {"success": not slip})
    except EStop:
        pass  # kept (on_error="abort"): episode.aborted = true, episode.abort_reason says why
    return ep


# --- the loop -------------------------------------------------------------------------------------

def roboloop(workspace: Path, *args: str) -> None:
    """Run a stock `roboloop` command: the same as typing `roboloop --workspace WORKSPACE ARGS...` in a shell, run
    through the command's Python entry point (`roboloop.cli.app`) so this script needs no second process."""
    print(f"$ roboloop {shlex.join(args)}")
    try:
        code = cli.app(["--workspace", str(workspace), *args], prog_name="roboloop", standalone_mode=False)
    except Exception as exc:
        if not hasattr(exc, "format_message"):  # not a usage error of the command line
            raise
        raise SystemExit(f"roboloop {args[0]}: {exc.format_message()}") from None
    if code not in (None, 0):
        raise SystemExit(f"roboloop {args[0]} failed (exit code {code})")


def stream_selection(workspace: Path, selection: str) -> dict[str, tuple[int, ...]]:
    """One epoch of an `EpisodeStream` over the selection's train episodes: this robot's entity paths at 20 Hz."""
    with Catalog(Workspace(workspace)) as cat:
        sel = curate.load(cat, selection)
        stream = EpisodeStream(cat, sel, rate_hz=HZ, batch_size=64, seed=0, fields={
            "state": "/robot/joint_positions",                                  # [B, 6]
            "force": "/robot/gripper_force",                                    # [B, 1]
            "action": Field("/robot/joint_targets", window=range(5)),           # [B, 5, 6] + action_mask
            "wrist": "/cameras/wrist",                                          # H.264 -> uint8 [B, 3, 48, 64]
        })
        samples, shapes = 0, {}
        for batch in stream:
            samples += len(batch["state"])
            shapes = {k: tuple(v.shape[1:]) for k, v in batch.items()}
    print(f"streamed {samples} samples from {len(sel.train_ids)} episodes: "
          + ", ".join(f"{k} {list(s)}" for k, s in shapes.items() if k in ("state", "force", "action", "wrist")))
    return {"samples": (samples,), **shapes}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("./.roboloop-your-robot"), help="Workspace folder.")
    ap.add_argument("--episodes", type=int, default=12, help="Episodes to record.")
    ap.add_argument("--seconds", type=float, default=4.0, help="Length of one episode.")
    ap.add_argument("--epochs", type=int, default=30, help="Training epochs.")
    ap.add_argument("--no-train", action="store_true", help="Stop after streaming.")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    ws = args.workspace.resolve()

    # 1. record: nothing but your own loop and roboloop.record
    episodes = [run_episode(ws, i, args.seconds, rng) for i in range(args.episodes)]
    aborted = sum(ep.aborted for ep in episodes)
    print(f"recorded {len(episodes)} episodes of {DATASET} ({aborted} aborted by the e-stop) into {ws}")

    # 2. curate: a query on properties, a deterministic train/holdout split
    roboloop(ws, "curate", "--dataset", DATASET, "--name", "v1", "--where", WHERE, "--holdout", "0.3")

    # 3. stream: the robot's own entity paths at a fixed rate
    shapes = stream_selection(ws, "v1")

    # 4. train: the stock trainer on this robot's state and action
    if not args.no_train:
        roboloop(ws, "train", "--dataset", DATASET, "--selection", "v1", "--state", "/robot/joint_positions",
                           "--state", "/robot/gripper_force", "--action", "/robot/joint_targets",
                           "--rate-hz", str(HZ), "--episode-steps", str(int(args.seconds * HZ)), "--epochs", str(args.epochs))
        roboloop(ws, "runs", "--dataset", DATASET)
    return {"episodes": episodes, "stream": shapes}


if __name__ == "__main__":
    main()
