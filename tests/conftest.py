"""Shared fixtures: a tiny random model folder, built once per test session."""

import os

# Before torch loads: OpenMP threads that sleep while they wait. Spinning threads on cores busy with other work
# (trainer subprocesses, a second job) ran tens of times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


def require_vllm() -> None:
    """Skip the calling test module where vLLM is not installed; with DFT_VERL_REQUIRE_VLLM=1 (CI, .ci/run) a missing
    vLLM fails the run instead, so a broken install cannot pass as skipped tests."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    message = "vLLM is not installed (bash scripts/install.sh --vllm)"
    if os.environ.get("DFT_VERL_REQUIRE_VLLM") == "1":
        pytest.fail(f"{message}, and DFT_VERL_REQUIRE_VLLM=1 requires it", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def pytest_collection_modifyitems(config, items):
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in items:
        marker = item.get_closest_marker("gpu")
        if marker is not None:
            need = marker.args[0] if marker.args else 1
            if n_cuda < need:
                item.add_marker(pytest.mark.skip(reason=f"needs {need} CUDA device(s), found {n_cuda}"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from dft_verl.tiny import build_tiny_model

    return build_tiny_model(str(tmp_path_factory.mktemp("models") / "tiny-qwen2"))


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    yield
