"""A minimal, strict unified-diff applier for the example-patch test (no `patch` binary needed)."""
import re

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def apply(original: str, diff: str) -> str:
    """Apply ``diff`` to ``original``; raise ValueError when a context or removed line differs."""
    src = original.splitlines(keepends=True)
    out, pos = [], 0
    lines = diff.splitlines(keepends=True)
    i = 0
    while i < len(lines) and not lines[i].startswith("@@"):
        i += 1
    while i < len(lines):
        m = HUNK.match(lines[i])
        if not m:
            raise ValueError(f"bad hunk header: {lines[i]!r}")
        start = int(m.group(1)) - 1 if m.group(2) != "0" else int(m.group(1))
        out.extend(src[pos:start])
        pos = start
        i += 1
        while i < len(lines) and not lines[i].startswith("@@"):
            tag, text = lines[i][:1], lines[i][1:]
            if tag == "\\":
                i += 1
                continue
            if tag in (" ", "-"):
                if pos >= len(src) or src[pos] != text:
                    raise ValueError(f"hunk does not apply at line {pos + 1}: expected {text!r}")
                pos += 1
                if tag == " ":
                    out.append(text)
            elif tag == "+":
                out.append(text)
            i += 1
    out.extend(src[pos:])
    return "".join(out)
