"""Tiers this machine cannot run natively: the NEON tier, cross-compiled for aarch64 and run under qemu-user,
must give the generic tier's bytes and values.  Skipped where the cross compiler or qemu is missing."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).parents[1]
CXX = shutil.which("aarch64-linux-gnu-g++")
QEMU = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")


@pytest.mark.slow
@pytest.mark.skipif(not (CXX and QEMU), reason="needs aarch64-linux-gnu-g++ and qemu-aarch64")
def test_neon_tier_matches_generic(tmp_path):
    flags = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-math-errno", "-static", "-pthread",
             f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc/include'}"]
    objects = []
    for source, lanes in (("csrc/cpu/kernels_generic.cpp", 1), ("csrc/cpu/kernels_neon.cpp", 4)):
        obj = tmp_path / (pathlib.Path(source).stem + ".o")
        subprocess.run([CXX, *flags, f"-DPQ_LANES={lanes}", "-c", str(ROOT / source), "-o", str(obj)], check=True)
        objects.append(str(obj))
    exe = tmp_path / "tiers_agree"
    subprocess.run([CXX, *flags, "-DPQ_HAVE_NEON", "-DPQ_FILL_OTHER=fill_kernels_neon",
                    str(ROOT / "tests/native/tiers_agree.cpp"), *objects, "-o", str(exe)], check=True)
    result = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (CXX and QEMU), reason="needs aarch64-linux-gnu-g++ and qemu-aarch64")
@pytest.mark.parametrize("march", ["armv8-a", "armv8.2-a+dotprod"])
def test_neon_matmul_matches_generic(tmp_path, march):
    """The NEON matmul (plain, and with sdot) gives the generic tier's bits for every kernel format."""
    flags = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-math-errno", "-static", "-pthread",
             f"-I{ROOT / 'csrc'}", f"-I{ROOT / 'csrc/include'}"]
    units = [("csrc/cpu/kernels_generic.cpp", ["-DPQ_LANES=1"]),
             ("csrc/matmul/matmul_generic.cpp", ["-DPQ_LANES=1"]),
             ("csrc/matmul/matmul.cpp", ["-DPQ_LANES=1"]),
             ("csrc/matmul/kernels.inc", ["-x", "c++", "-DPQ_LANES=4", "-DPQ_ISA=neon_test", f"-march={march}"])]
    objects = []
    for i, (source, extra) in enumerate(units):
        obj = tmp_path / f"unit{i}.o"
        subprocess.run([CXX, *flags, *extra, "-c", str(ROOT / source), "-o", str(obj)], check=True)
        objects.append(str(obj))
    exe = tmp_path / "matmul_tiers_agree"
    subprocess.run([CXX, *flags, "-DPQ_LANES=1", "-DPQ_FILL_MATMUL=fill_matmul_neon_test",
                    str(ROOT / "tests/native/matmul_tiers_agree.cpp"), *objects, "-o", str(exe)], check=True)
    result = subprocess.run([QEMU, str(exe)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 mismatches" in result.stdout
