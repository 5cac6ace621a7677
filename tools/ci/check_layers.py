#!/usr/bin/env python3
"""Fails when an #include points up the library's layers (shared/DESIGN.md, "Layout").

Folders of include/hllm/ and kernels/hllm/cuda/ are ranked; a header may include headers of its
own folder and of lower-ranked folders only. CUDA kernels (kernels/hllm/cuda/*.cuh) may include
core/ and layout/ (the host/device contracts) and each other; the backend files (backend.cuh,
which implements the model's Backend interface, and device.cuh, which registers its entry points
for plain C++) may also include model/. The host library (include/hllm/) never includes a CUDA
header: it reaches the CUDA backend through model/cuda_entry.hpp. No library header includes the
umbrella hllm/hllm.hpp.

Usage: check_layers.py [REPO_ROOT]    exit status 1 and one line per violation when any exist.
       check_layers.py --self-test REPO_ROOT    injects one violation of each rule into a copy of
                                                the headers and checks that each is reported.
"""
import pathlib
import re
import shutil
import sys
import tempfile

RANK = {
    "core": 0,
    "layout": 1,
    "io": 2,
    "quant": 3,
    "tokenizer": 3,
    "model": 4,
    "cpu": 5,
    "cuda": 5,  # kernels/hllm/cuda/ only; include/hllm/ may not include it
    "grammar": 6,
    "engine": 7,
    "serve": 8,
}
KERNEL_INCLUDES = {"core", "layout", "cuda"}
BACKEND_INCLUDES = KERNEL_INCLUDES | {"model"}
BACKEND_FILES = {"backend.cuh", "device.cuh"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]hllm/([a-z_]+)/')
UMBRELLA = re.compile(r'^\s*#\s*include\s*[<"]hllm/hllm\.hpp[>"]')


def folder_of(path: pathlib.Path) -> str:
    """The layer of a header: its folder right under hllm/ (serve/http/ is part of serve/)."""
    parts = path.parts
    return parts[len(parts) - 1 - parts[::-1].index("hllm") + 1]


def violations(root: pathlib.Path):
    kernels = root / "kernels/hllm/cuda"
    headers = sorted((root / "include/hllm").rglob("*.hpp")) + sorted(
        [*kernels.rglob("*.cuh"), *kernels.rglob("*.hpp")])
    for header in headers:
        if header.parent == root / "include/hllm":
            continue  # the umbrella includes whatever it offers
        here = folder_of(header)
        if here not in RANK:
            yield f"{header.relative_to(root)}: folder '{here}' has no rank in {__file__}"
            continue
        for number, line in enumerate(header.read_text(encoding="utf-8").splitlines(), 1):
            if UMBRELLA.match(line):
                yield f"{header.relative_to(root)}:{number}: includes the umbrella hllm/hllm.hpp"
                continue
            match = INCLUDE.match(line)
            if not match:
                continue
            target = match.group(1)
            where = f"{header.relative_to(root)}:{number}"
            if target not in RANK:
                yield f"{where}: includes unknown folder '{target}'"
            elif here == "cuda":
                allowed = BACKEND_INCLUDES if header.name in BACKEND_FILES else KERNEL_INCLUDES
                if target not in allowed:
                    yield (f"{where}: CUDA kernels include only {sorted(allowed)}, "
                           f"not {target}/")
            elif target == "cuda":
                yield (f"{where}: the host library includes no CUDA header "
                       f"(use model/cuda_entry.hpp)")
            elif target != here and RANK[target] >= RANK[here]:
                yield (f"{where}: {here}/ (rank {RANK[here]}) includes {target}/ "
                       f"(rank {RANK[target]}): includes must point down the layers")


# (file, include to append, text the report must contain): one case per rule.
SELF_TEST_CASES = [
    ("include/hllm/model/llama.hpp", "hllm/engine/engine.hpp", "includes must point down"),
    ("include/hllm/engine/engine.hpp", "hllm/cuda/common.cuh", "includes no CUDA header"),
    ("include/hllm/core/tensor.hpp", "hllm/hllm.hpp", "umbrella"),
    ("kernels/hllm/cuda/norm.cuh", "hllm/cpu/simd.hpp", "CUDA kernels include only"),
    ("kernels/hllm/cuda/rope.cuh", "hllm/model/rope.hpp", "CUDA kernels include only"),
]


def self_test(root: pathlib.Path) -> int:
    if list(violations(root)):
        print("check_layers --self-test: the tree itself has violations; run without --self-test")
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        copy = pathlib.Path(scratch)
        for part in ("include", "kernels"):
            shutil.copytree(root / part, copy / part)
        for path, include, _ in SELF_TEST_CASES:
            with open(copy / path, "a", encoding="utf-8") as f:
                f.write(f'#include "{include}"\n')
        found = list(violations(copy))
    missed = [case for case in SELF_TEST_CASES
              if not any(case[0] in line and case[2] in line for line in found)]
    for path, include, _ in missed:
        print(f"check_layers --self-test: {path} including {include} was not reported")
    if missed or len(found) != len(SELF_TEST_CASES):
        print(f"check_layers --self-test: FAILED ({len(found)} reports for "
              f"{len(SELF_TEST_CASES)} injected violations)")
        return 1
    print(f"check_layers --self-test: all {len(SELF_TEST_CASES)} injected violations reported")
    return 0


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--self-test":
        return self_test(pathlib.Path(sys.argv[2]).resolve())
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    found = list(violations(root))
    for line in found:
        print(line)
    if found:
        print(f"check_layers: {len(found)} upward include(s)")
        return 1
    print("check_layers: every include points down the layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
