"""Corrupt a running lab guest's working set from the host, on purpose.

The self-test of the integrity witness: flip one bit in a few of the guest's
pattern pages through ``/proc/<qemu pid>/mem`` (guest RAM is an anonymous
mapping of the QEMU process) and the guest must report them as bad pages.
A check that never fails proves nothing; this one is shown to fail.
"""
from __future__ import annotations

import re
from pathlib import Path

from nova_livemig_lab.errors import LabError

PAGE_BYTES = 4096
WORD_MASK = (1 << 64) - 1
# dirtier.c: word i of a page = base + i * PATTERN_STEP (mod 2**64).
PATTERN_STEP = 0xD6E8FEB86659FD93
CHUNK_BYTES = 16 << 20


def _ram_mappings(pid: int, min_bytes: int) -> list[tuple[int, int]]:
    """Anonymous read-write mappings big enough to be guest RAM."""
    found = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        match = re.match(r"([0-9a-f]+)-([0-9a-f]+) rw.p \S+ \S+ 0\s*$", line)
        if match:
            start, end = int(match.group(1), 16), int(match.group(2), 16)
            if end - start >= min_bytes:
                found.append((start, end))
    return found


def _is_pattern_page(page: bytes) -> bool:
    words = [int.from_bytes(page[i:i + 8], "little") for i in (0, 8, 16)]
    return ((words[1] - words[0]) & WORD_MASK == PATTERN_STEP
            and (words[2] - words[1]) & WORD_MASK == PATTERN_STEP)


def find_pattern_pages(pid: int, ram_bytes: int, limit: int) -> list[int]:
    """Host virtual addresses of up to ``limit`` dirtier pages, spread over RAM."""
    addresses: list[int] = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end in _ram_mappings(pid, ram_bytes):
            for chunk_start in range(start, end, CHUNK_BYTES):
                mem.seek(chunk_start)
                chunk = mem.read(min(CHUNK_BYTES, end - chunk_start))
                for offset in range(0, len(chunk), PAGE_BYTES):
                    if _is_pattern_page(chunk[offset:offset + PAGE_BYTES]):
                        addresses.append(chunk_start + offset)
                        break  # one page per chunk: spread the damage
                if len(addresses) >= limit:
                    return addresses
    return addresses


def corrupt_pages(pid: int, ram_bytes: int, count: int) -> list[int]:
    """Flip a bit in word 5 of ``count`` dirtier pages; returns their addresses."""
    addresses = find_pattern_pages(pid, ram_bytes, count)
    if len(addresses) < count:
        raise LabError(f"found only {len(addresses)} dirtier pages in QEMU {pid}")
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        for address in addresses:
            mem.seek(address + 40)
            word = bytearray(mem.read(8))
            word[0] ^= 0x01
            mem.seek(address + 40)
            mem.write(bytes(word))
    return addresses
