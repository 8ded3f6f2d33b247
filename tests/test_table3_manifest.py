"""The one resume rule (dft_verl.table3.manifest): when a step is skipped, rerun, resumed or rerun keeping what it
made, and the reason it says, on real files."""

from __future__ import annotations

import json
import os

from dft_verl.table3.manifest import Manifest, fingerprint, grew, step_inputs


def test_finished_with_the_same_inputs_is_skipped_and_a_changed_value_is_named(tmp_path):
    data = tmp_path / "train.parquet"
    data.write_bytes(b"rows")
    out = tmp_path / "ckpt"
    m = Manifest(tmp_path / "steps", "train")
    inputs = step_inputs({"args": ["optim.lr=5e-5"]}, [data])
    assert m.decide(inputs, [out]).reason == "not run yet"
    m.start(inputs)
    assert m.decide(inputs, [out]).reason == "resuming an unfinished run with the same inputs"  # killed: verl resumes
    out.mkdir()
    m.finish(inputs, 12.0)
    d = m.decide(inputs, [out])
    assert not d.run and d.reason.startswith("finished ") and d.reason.endswith("with the same inputs")
    changed = m.decide(step_inputs({"args": ["optim.lr=1e-5"]}, [data]), [out])
    assert changed.run and changed.clear and changed.reason == "inputs changed: args"
    data.write_bytes(b"other rows")  # a file read: its bytes are the input
    d = m.decide(step_inputs({"args": ["optim.lr=5e-5"]}, [data]), [out])
    assert d.clear and d.reason == f"inputs changed: file {data}"
    forced = m.decide(inputs, [out], overwrite=True)
    assert forced.run and forced.clear and forced.reason == "OVERWRITE=1"


def test_a_missing_output_reruns_and_a_cut_record_is_no_record(tmp_path):
    m = Manifest(tmp_path / "steps", "eval")
    inputs = step_inputs({"args": []}, [])
    m.finish(inputs, 1.0)
    d = m.decide(inputs, [tmp_path / "results.json"])
    assert d.run and d.clear and d.reason == f"outputs missing: {tmp_path / 'results.json'}"
    m.done_path.write_text('{"step": "eval", "inpu')  # killed while writing (atomic writes never leave this)
    assert m.decide(inputs).reason == "not run yet"


def test_a_file_grown_at_its_end_keeps_what_was_made(tmp_path):
    bench = tmp_path / "test.jsonl"
    bench.write_text('{"q": 1}\n{"q": 2}\n')
    m = Manifest(tmp_path / "steps", "eval")
    old = step_inputs({"args": ["--k", "2"]}, [bench])
    m.finish(old, 1.0)
    bench.write_text('{"q": 1}\n{"q": 2}\n{"q": 3}\n')
    d = m.decide(step_inputs({"args": ["--k", "2"]}, [bench]))
    assert d.run and d.grown and not d.clear and d.reason == f"input grew at its end: {bench}"
    # grown, but another value changed too: everything is redone
    assert m.decide(step_inputs({"args": ["--k", "4"]}, [bench])).clear
    # the same length with other first bytes is a changed file, not a grown one
    bench.write_text('{"q": 9}\n{"q": 2}\n{"q": 3}\n')
    assert not grew(old["files"][str(bench)], bench)
    assert m.decide(step_inputs({"args": ["--k", "2"]}, [bench])).clear


def test_folder_fingerprint_sees_a_rewritten_checkpoint_without_hashing_it(tmp_path):
    hf = tmp_path / "global_step_2" / "huggingface"
    hf.mkdir(parents=True)
    (hf / "model.safetensors").write_bytes(b"w" * 1000)
    before = fingerprint(hf)
    assert before == {"files": [["model.safetensors", 1000, (hf / "model.safetensors").stat().st_mtime_ns]]}
    st = (hf / "model.safetensors").stat()
    os.utime(hf / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # retrained: same size, new file
    assert fingerprint(hf) != before
    assert fingerprint(tmp_path / "nope") == {"missing": True}
    assert fingerprint("Qwen/Qwen2.5-Math-1.5B") == {"missing": True}  # a hub id: its name is in the command


def test_records_are_json_a_user_can_read(tmp_path):
    m = Manifest(tmp_path / "steps", "eval/step_3")
    m.finish(step_inputs({"module": "dft_verl.eval", "args": ["--k", "2"]}, []), 3.25)
    record = json.loads((tmp_path / "steps" / "eval_step_3.json").read_text())
    assert record["step"] == "eval/step_3" and record["seconds"] == 3.2
    assert record["inputs"] == {"config": {"args": ["--k", "2"], "module": "dft_verl.eval"}, "files": {}}
