#!/usr/bin/env python3
"""Fails when an #include points up the library's layers (shared/DESIGN.md, "Layout").

Folders of include/hllm/ and kernels/hllm/cuda/ are ranked; a header may include headers of its
own folder and of lower-ranked folders only. CUDA kernels (kernels/hllm/cuda/*.cuh) may include
core/ and layout/ (the host/device contracts) and each other; the backend files (backend.cuh,
which implements the model's Backend interface, and device.hpp / device.cuh, its entry points for
plain C++) may also include model/.

Usage: check_layers.py [REPO_ROOT]    exit status 1 and one line per violation when any exist.
"""
import pathlib
import re
import sys

RANK = {
    "core": 0,
    "layout": 1,
    "io": 2,
    "quant": 3,
    "tokenizer": 3,
    "model": 4,
    "cpu": 5,
    "cuda": 5,
    "grammar": 6,
    "engine": 7,
    "serve": 8,
}
KERNEL_INCLUDES = {"core", "layout", "cuda"}
BACKEND_INCLUDES = KERNEL_INCLUDES | {"model"}
BACKEND_FILES = {"backend.cuh", "device.hpp", "device.cuh"}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]hllm/([a-z_]+)/')


def folder_of(path: pathlib.Path) -> str:
    return path.parent.name


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
            elif target != here and RANK[target] >= RANK[here]:
                yield (f"{where}: {here}/ (rank {RANK[here]}) includes {target}/ "
                       f"(rank {RANK[target]}): includes must point down the layers")


def main() -> int:
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
