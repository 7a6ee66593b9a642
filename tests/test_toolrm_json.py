"""A checkpoint's toolrm.json: one torch-free reader and writer, a format check, errors naming file and field."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolrm_rl.core.render import RenderSpec
from toolrm_rl.core.toolrm_json import FORMAT_VERSION, read_render_spec, read_toolrm_json, write_toolrm_json

SPEC = RenderSpec(mode="plain", max_tokens=777, sep="\n")


def test_round_trip_and_absent_file(tmp_path):
    path = write_toolrm_json(tmp_path, SPEC, "encoder")
    data = read_toolrm_json(tmp_path)
    assert path.name == "toolrm.json" and data["format_version"] == FORMAT_VERSION and data["backbone"] == "encoder"
    assert read_render_spec(tmp_path) == SPEC and data["toolrm_rl_version"]
    assert read_toolrm_json(tmp_path / "absent") is None and read_render_spec(tmp_path / "absent") is None
    with pytest.raises(ValueError, match="backbone"):
        write_toolrm_json(tmp_path, SPEC, "seq2seq")


@pytest.mark.parametrize("change, field", [
    ({"format_version": FORMAT_VERSION + 1}, "format_version"),
    ({"format_version": "1"}, "format_version"),
    ({"format_version": None}, "format_version"),
    ({"backbone": "seq2seq"}, "backbone"),
    ({"render": {"mode": "html"}}, "render"),
    ({"render": {"max_tokens": "many"}}, "render"),
])
def test_bad_fields_are_named_with_the_file(tmp_path, change, field):
    path = write_toolrm_json(tmp_path, SPEC, "decoder")
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=rf"{tmp_path}/toolrm.json: field {field}"):
        read_render_spec(tmp_path)


def test_not_json_or_not_an_object(tmp_path):
    (tmp_path / "toolrm.json").write_text("{cut")
    with pytest.raises(ValueError, match="toolrm.json: not valid JSON"):
        read_toolrm_json(tmp_path)
    (tmp_path / "toolrm.json").write_text("[1]")
    with pytest.raises(ValueError, match="toolrm.json: expected a JSON object"):
        read_toolrm_json(tmp_path)


def test_remote_scorer_and_verl_reward_read_the_spec_without_torch(tmp_path):
    write_toolrm_json(tmp_path, SPEC, "encoder")
    code = ("import sys\n"
            "from toolrm_rl.scoring import build_scorer\n"
            "from toolrm_rl.verl.config import ToolRewardConfig\nfrom toolrm_rl.verl.scorers import render_spec_for\n"
            "remote = build_scorer('remote', options={'url': 'http://127.0.0.1:1', 'api': 'vllm',\n"
            f"                                          'model': {str(tmp_path)!r}}})\n"
            f"spec = render_spec_for(ToolRewardConfig(model_path={str(tmp_path)!r}))\n"
            "print(remote.render_spec.max_tokens, spec.max_tokens, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["777", "777", "False"], out.stdout + out.stderr


def test_verl_reward_refuses_a_newer_toolrm_json(tmp_path):
    from toolrm_rl.verl.config import ToolRewardConfig
    from toolrm_rl.verl.scorers import render_spec_for

    path = write_toolrm_json(tmp_path, SPEC, "decoder")
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="field format_version"):
        render_spec_for(ToolRewardConfig(model_path=str(tmp_path)))
