"""Table 3 of the DFT paper as Python plus data.

rows.py      the rows and the comparisons (one definition: orchestrator, report, demo and tests read it)
settings.py  every setting, its paper default, and the presets (paper, cpu-small, cpu-tiny)
plan.py      each stage's steps: module, arguments, what they read and write
launch.py    how a step's process starts: this machine (python, torchrun) or `ray job submit`
manifest.py  the one resume rule: skip a step only when it finished with the same inputs
runner.py    runs the steps; check.py composes their configs against verl; board.py: the tracking board
__main__.py  python -m dft_verl.table3 run|print|check|settings|rows
"""
