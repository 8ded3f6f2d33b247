"""SFT parquet checks: bad input fails fast with file, row and field named."""

import pandas as pd
import pytest

from dft_verl.data import SFTDataError, check_sft_files


def write(tmp_path, rows, name="train.parquet"):
    path = tmp_path / name
    pd.DataFrame(rows).to_parquet(path)
    return str(path)


def ok_row(answer="42"):
    return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]}


def test_valid_file_counts_rows(tmp_path):
    assert check_sft_files([write(tmp_path, [ok_row(), ok_row("7")])]) == 2


def test_missing_messages_column_names_file_and_key(tmp_path):
    path = write(tmp_path, [{"prompt": "q", "response": "a"}])
    with pytest.raises(SFTDataError, match=r"train\.parquet: missing column 'messages'.*\['prompt', 'response'\]"):
        check_sft_files(path)


def test_custom_messages_key_is_honoured(tmp_path):
    path = write(tmp_path, [{"conv": ok_row()["messages"]}])
    assert check_sft_files(path, {"messages_key": "conv"}) == 1
    with pytest.raises(SFTDataError, match="missing column 'messages'"):
        check_sft_files(path)


def test_empty_response_names_row(tmp_path):
    path = write(tmp_path, [ok_row(), ok_row(), ok_row("   ")])
    with pytest.raises(SFTDataError, match=r"row 2: field 'messages': no non-empty assistant message"):
        check_sft_files(path)


def test_message_without_role_names_index(tmp_path):
    path = write(tmp_path, [{"messages": [{"content": "q"}]}])
    with pytest.raises(SFTDataError, match=r"row 0: field 'messages'\[0\]"):
        check_sft_files(path)


def test_missing_file_and_iw_sft_reference(tmp_path):
    with pytest.raises(SFTDataError, match="not found"):
        check_sft_files(str(tmp_path / "nope.parquet"))
    with pytest.raises(SFTDataError, match="ref_log_probs"):
        check_sft_files(write(tmp_path, [ok_row()]), need_ref=True)
