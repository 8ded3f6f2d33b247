"""DPO on verl's FSDP engine: the Table-3 preference baseline, trained by the same trainer as SFT/DFT.

    python -m dft_verl.dpo.ref_logprobs --model M --data dpo.parquet --out dpo_ref.parquet   # once
    torchrun --standalone --nproc_per_node=N -m dft_verl.dpo.train data.train_files=dpo_ref.parquet model.path=M

Modules: ``loss`` (the DPO loss and its metrics), ``data`` (pair checks, dataset, collator, micro-batch
grouping), ``ref_logprobs`` (stored reference log-probs), ``train`` (the trainer entry point).
"""
