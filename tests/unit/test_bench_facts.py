"""bench/common.py: benchmark JSON names the CPU and the vector extensions that decide int8 vs float speed."""

from __future__ import annotations

from bench.common import cpu_facts

X86 = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma f16c bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma f16c bmi2
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd aes asimddp i8mm
CPU part\t: 0xd0c
"""


def test_x86_model_and_only_the_speed_flags(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86)
    assert cpu_facts(tmp_path / "cpuinfo") == {"cpu_model": "AMD EPYC 7B13", "cpu_flags": ["avx2", "fma"]}


def test_arm_flags_come_from_features_and_no_hex_part_number_as_a_model(tmp_path, monkeypatch):
    monkeypatch.setattr("platform.processor", lambda: "")
    (tmp_path / "cpuinfo").write_text(ARM)
    assert cpu_facts(tmp_path / "cpuinfo") == {"cpu_model": "unknown", "cpu_flags": ["asimddp", "i8mm"]}


def test_without_cpuinfo_the_flags_are_unknown_not_empty(tmp_path):
    facts = cpu_facts(tmp_path / "missing")
    assert facts["cpu_flags"] is None and facts["cpu_model"]
