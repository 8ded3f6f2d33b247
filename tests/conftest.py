"""Shared fixtures: a tiny random model folder, built once per test session."""

import os

# Before torch loads: OpenMP threads that sleep while they wait. Spinning threads on cores busy with other work
# (trainer subprocesses, a second job) ran tens of times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402


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
