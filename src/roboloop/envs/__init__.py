"""Tasks: what a robot does, under which conditions, and how success is judged.

``envs/aloha/`` is the ALOHA bimanual transfer-cube task in MuJoCo: its scene conditions,
simulator, scripted demonstrator, strict success, and what one of its episodes records.

Importing this package loads no simulator.
"""
