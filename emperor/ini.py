"""The uWSGI ini dialect, read the way uWSGI reads it, with hard limits.

uWSGI's ini files are not Python ``configparser``/``configobj`` files: keys repeat and every
repeat counts, a bare key means "true", there are no inline comments, ``%X`` magic variables
refer to the file being read, and ``ini =`` splices another file in place. Expansion of
``$(ENV)`` and ``%(placeholder)`` happens later (:func:`expand`), after the command line has
been appended, because forward references and first-wins lookups need the whole tree.

Config files can be hostile (tyrant mode), so every step is bounded: file size, include depth
and count, number of entries, and the length of an expanded value. Placeholder chains are
resolved iteratively, so a 10 000-deep chain cannot raise ``RecursionError``. The only
exception this module raises on bad input is :class:`IniError`.

Why this module is over the ~500 lines of the others: it is one reader of one dialect. The
loader (includes, ``if-*``/``for-*`` blocks, magic variables) and the expansion share the
``Entry`` records, the error type and, above all, the limits, which must be counted in one
place to bound a hostile file; split across modules, each limit would be enforced in two.
"""

from __future__ import annotations

import glob
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from emperor import __version__

DEFAULT_SECTION = "uwsgi"
MAX_FILE_SIZE = 1 << 20  # bytes per file
MAX_INCLUDE_DEPTH = 16  # nested ini/include levels
MAX_FILES = 256  # files opened by one load()
MAX_ENTRIES = 100_000  # entries produced by one load(), for-loops included
MAX_VALUE_LEN = 64 << 10  # characters in one value after expansion
MAX_TOTAL_LEN = 16 << 20  # characters in all values together (load output, then expand output)
MAX_PROBLEMS = 1000  # problems collected by one load() before it stops reading

INCLUDE_KEYS = frozenset({"ini", "include"})
PLACEHOLDER_KEYS = frozenset({"set-placeholder", "set-ph"})
_END_KEYS = frozenset({"end", "endfor", "end-for", "endif", "end-if"})
# uWSGI's short spellings of the same tests
_IF_ALIASES = {"ifenv": "if-env", "ifexists": "if-exists", "ifdir": "if-dir", "if-directory": "if-dir"}
_IF_KEYS = frozenset({"if-env", "if-not-env", "if-exists", "if-not-exists", "if-file", "if-not-file",
                      "if-dir", "if-not-dir", "if-opt", "if-not-opt", "if-hostname", "if-not-hostname",
                      *_IF_ALIASES})
_FOR_KEYS = frozenset({"for", "for-times", "for-glob", "for-readline"})
_BLOCK_KEYS = _IF_KEYS | _FOR_KEYS
# Reader-level directives uWSGI knows and emperor refuses loudly instead of mis-reading.
_REFUSED: dict[str, str] = {
    "inherit": "inherit is not supported; use ini = file.ini (spliced in place)",
    "xml": "only ini files are read",
    "yaml": "only ini files are read",
    "yml": "only ini files are read",
    "json": "only ini files are read",
    "js": "only ini files are read",
    "config": "only ini files are read; use ini = file.ini",
    "if-reload": "if-reload blocks are not supported",
    "if-not-reload": "if-not-reload blocks are not supported",
    "if-plugin": "emperor has no plugins (if-plugin blocks are not supported)",
    "if-not-plugin": "emperor has no plugins (if-not-plugin blocks are not supported)",
    "ifplugin": "emperor has no plugins (if-plugin blocks are not supported)",
}
_NOT_INI_EXT = (".xml", ".yaml", ".yml", ".json", ".js")

_TOP_FILE_MAGIC = frozenset("OPSNEDCXIJ")  # %N etc.: the same as %n for the first file loaded
_MAGIC_RE = re.compile(r"%(.)", re.DOTALL)
_ENV_RE = re.compile(r"\$\(([^)]*)\)")
_PH_RE = re.compile(r"%\(([^)]*)\)")


@dataclass(frozen=True)
class Entry:
    """One ``key = value`` in application order; ``line`` is 1-based, 0 for the command line."""

    key: str
    value: str
    file: str
    line: int


class IniError(Exception):
    """A reader problem, located like a compiler error: ``file:line: key: message``."""

    def __init__(self, message: str, file: str = "", line: int = 0, key: str = "",
                 fatal: bool = False) -> None:
        self.message, self.file, self.line, self.key = message, file, line, key
        self.fatal = fatal  # a limit was hit: reading stops even when problems are being collected
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")


# ----------------------------------------------------------------------------------------- reading

def _split_spec(spec: str) -> tuple[str, str]:
    """``file.ini:section`` -> (file, section or ""). The last ``:`` counts unless a ``/`` follows it.

    The section stays empty when none is given, because ``%x`` is empty then (as in uWSGI).
    ``:section`` gives an empty file name: the caller decides which file that means.
    """
    colon = spec.rfind(":")
    if colon >= 0 and "/" not in spec[colon + 1:]:
        return spec[:colon], spec[colon + 1:]
    return spec, ""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _read_bytes(path: str) -> bytes:
    """Read a regular file of at most MAX_FILE_SIZE bytes; never block on a FIFO or open a device.

    ``stat`` first so that devices are not even opened, then ``O_NONBLOCK`` + ``fstat`` on the
    descriptor, because the path may be swapped between the two calls. Raises ``_ReadError``.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _ReadError(f"refusing to read {_kind(st.st_mode)}")
        if st.st_size > MAX_FILE_SIZE:
            raise _ReadError(f"file too large ({st.st_size} bytes, limit {MAX_FILE_SIZE})")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _ReadError(f"refusing to read {_kind(st.st_mode)}")
            data = read_at_most(fd, MAX_FILE_SIZE)
            if data is None:
                raise _ReadError(f"file too large (over {MAX_FILE_SIZE} bytes)")
            return data
        finally:
            os.close(fd)
    except OSError as exc:
        raise _ReadError(f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # e.g. "embedded null byte" in the path
        raise _ReadError(f"cannot read: {exc}") from None


_PINNED: dict[str, bytes] = {}


def pin(path: str, data: bytes | None) -> None:
    """From now on, reading the file at absolute ``path`` yields ``data`` (``emperor/inifd.py``);
    None: read the file again."""
    if data is None:
        _PINNED.pop(path, None)
    else:
        _PINNED[path] = data


def read_at_most(fd: int, limit: int) -> bytes | None:
    """All of ``fd`` up to ``limit`` bytes, or None when it holds more. The size ``fstat`` gave
    is not trusted: a file can grow while it is read (and a FIFO has none)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


class _ReadError(Exception):
    """Internal: why a file could not be read; the caller decides where to attribute it."""


def _decode(data: bytes, path: str) -> list[str]:
    """Strict UTF-8 (a mis-encoded config is a mistake worth reporting), BOM dropped, no NULs."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise IniError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", path, line) from None
    if "\0" in text:
        raise IniError("NUL byte in file", path, text.count("\n", 0, text.index("\0")) + 1)
    return text.split("\n")


# ----------------------------------------------------------------------------------- magic variables

def _djb33x(text: str) -> str:
    """uWSGI's djb33x hash (bytes taken as signed chars, like its C code), as 8 hex digits."""
    h = 5381
    for b in os.fsencode(text):
        h = (((h << 5) + h) ^ (b - 256 if b > 127 else b)) & 0xFFFFFFFF
    return f"{h:08x}"


def _file_magic(given: str, path: str, section: str) -> dict[str, str]:
    """The per-file magic variables. ``path`` is absolute and deliberately not resolved, so a
    symlinked vassal gets the link's own name in ``%n`` (the "one skel, many links" pattern)."""
    d, s = path.rsplit("/", 1)
    d += "/"
    n, dot, e = s.rpartition(".")
    if not dot:
        n, e = s, ""
    parts = [p for p in d.split("/") if p]
    try:
        inode = str(os.lstat(path).st_ino)
    except (OSError, ValueError):
        inode = ""
    table = {"o": given, "p": path, "s": s, "n": n, "e": e, "d": d, "c": parts[-1] if parts else "",
             "x": section, "i": inode, "j": _djb33x(path)}
    for i in range(10):
        table[str(i)] = parts[i] if i < len(parts) else ""
    return table


def _user_name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    import grp
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _global_magic(cwd: str, start: float) -> dict[str, Callable[[], str]]:
    """Process-wide magic variables, computed only when a file uses them."""
    return {
        "v": lambda: cwd, "h": socket.gethostname, "V": lambda: __version__,
        "k": lambda: str(os.cpu_count() or 1), "u": lambda: str(os.getuid()),
        "U": lambda: _user_name(os.getuid()), "g": lambda: str(os.getgid()),
        "G": lambda: _group_name(os.getgid()), "t": lambda: str(int(start)),
        "T": lambda: str(int(start * 1_000_000)), "b": lambda: sys.executable or "",
        "[": lambda: "\x1b", "%": lambda: "%",
    }


# ------------------------------------------------------------------------------------------- loading

class _Loader:
    """One ``load()`` call: the include stack, the limits, and the output list."""

    def __init__(self, environ: Mapping[str, str], cwd: str, before: Sequence[Entry] = (),
                 collect: list[IniError] | None = None) -> None:
        self.environ, self.cwd, self.before, self.collect = environ, cwd, before, collect
        self.out: list[Entry] = []
        self.stack: list[tuple[str, str]] = []
        self.files = 0
        self.total = 0
        self.top: dict[str, str] = {}
        self.glob = _global_magic(cwd, time.time())
        self.glob_cache: dict[str, str] = {}

    def problem(self, exc: IniError) -> None:
        """Record a problem and go on with the next line, or raise it (when not collecting, or
        for a limit). What was skipped: the line, the include, or the block."""
        if self.collect is None or exc.fatal:
            raise exc
        if len(self.collect) >= MAX_PROBLEMS:
            raise IniError(f"more than {MAX_PROBLEMS} problems; stopped reading", exc.file, fatal=True)
        self.collect.append(exc)

    def magic(self, table: dict[str, str]) -> Callable[[re.Match[str]], str]:
        def sub(m: re.Match[str]) -> str:
            c = m.group(1)
            if c == "(":
                return "%("  # a placeholder, expanded later
            if c in table:
                return table[c]
            if c in _TOP_FILE_MAGIC and self.top:
                return self.top[c.lower()]  # %N etc.: the first (top-level) file
            if c in self.glob:
                if c not in self.glob_cache:
                    self.glob_cache[c] = self.glob[c]()
                return self.glob_cache[c]
            return ""  # unknown magic variables vanish, as in uWSGI
        return sub

    def load_file(self, given: str, path: str, asked: str, origin: tuple[str, int, str] | None) -> None:
        section = asked or DEFAULT_SECTION
        ofile, oline, okey = origin or (path, 0, "")
        names = [f"{p}:{s}" if s != DEFAULT_SECTION else p for p, s in self.stack]
        me = f"{path}:{section}" if section != DEFAULT_SECTION else path
        if (path, section) in self.stack:
            raise IniError("include loop: " + " -> ".join([*names, me]), ofile, oline, okey)
        if len(self.stack) >= MAX_INCLUDE_DEPTH:
            raise IniError(f"includes nested more than {MAX_INCLUDE_DEPTH} deep (include loop?): "
                           + " -> ".join([*names, me]), ofile, oline, okey)
        self.files += 1
        if self.files > MAX_FILES:
            raise IniError(f"more than {MAX_FILES} files included", ofile, oline, okey, fatal=True)
        try:
            data = _PINNED[path] if path in _PINNED else _read_bytes(path)
        except _ReadError as exc:
            if origin is None:
                raise IniError(str(exc), path) from None
            raise IniError(f"cannot include {path}: {exc}", ofile, oline, okey) from None
        table = _file_magic(given, path, asked)
        if not self.top:
            self.top = table
        lines = self.section_lines(_decode(data, path), path, section, self.magic(table), self.problem)
        self.stack.append((path, section))
        try:
            self.run(lines, path)
        finally:
            self.stack.pop()

    @staticmethod
    def section_lines(raw: list[str], path: str, section: str, magic: Callable[[re.Match[str]], str],
                      problem: Callable[[IniError], None]) -> list[tuple[int, str, str]]:
        """The ``(line, key, value)`` triples of the requested section, magic variables applied.
        A malformed line goes to ``problem`` (which raises unless problems are collected)."""
        current: str | None = None
        found = False
        lines: list[tuple[int, str, str]] = []
        for number, text in enumerate(raw, 1):
            line = _MAGIC_RE.sub(magic, text).strip(" \t\r")
            if not line or line[0] in ";#":
                continue
            if line[0] == "[":
                if len(line) < 2 or line[-1] != "]":
                    problem(IniError(f"section header without closing ']': {line[:80]!r}", path, number))
                    current = None  # the lines up to the next header belong to no section
                    continue
                current = line[1:-1].strip(" \t")
                found = found or current == section
                continue
            if current != section:
                continue
            key, _, value = line.partition("=")
            key = key.rstrip(" \t\r")
            if not key:
                problem(IniError("'=' with no key before it", path, number))
                continue
            lines.append((number, key, value.strip(" \t\r")))
        if not found:
            raise IniError(f"section [{section}] not found", path)
        return lines

    def run(self, lines: list[tuple[int, str, str]], path: str) -> None:
        """Apply logic blocks (one level, like uWSGI) and emit or splice each line.

        A block's body is applied once per token of its header (``for``: each word, an ``if``:
        once or not at all), with ``%(_)`` in each value replaced by the token, as uWSGI does
        when it replays the block. ``else`` inside an ``if`` block applies what follows it when
        the test failed; ``%(_)`` is not replaced there (uWSGI has no token to give).
        """
        block: tuple[int, str, str] | None = None
        body: list[tuple[int, str, str]] = []
        for number, key, value in lines:
            if key in _END_KEYS or key == "else":
                if block is None:
                    self.problem(IniError(f"no open {'if' if key == 'else' else 'for/if'} block to "
                                          f"{'continue' if key == 'else' else 'end'}", path, number, key))
                    continue
                try:
                    tokens = self.block_tokens(block, path)
                except IniError as exc:
                    self.problem(exc)  # then the block's lines are skipped
                    tokens = []
                for token in tokens:
                    for n, k, v in body:
                        self.emit(path, n, k, v if token is None else v.replace("%(_)", token))
                body = []
                if key != "else":
                    block = None
                elif block[1] in _IF_KEYS:
                    block = (number, "else", "1" if tokens else "")
                else:
                    self.problem(IniError(f"else needs an if block, not '{block[1]}' (line {block[0]})",
                                          path, number, key))
                    block = (number, "else", "1")  # skip what follows, up to the end line
            elif block is not None:
                if key in _BLOCK_KEYS:
                    self.problem(IniError(f"nested block inside '{block[1]}' (line {block[0]}) is not "
                                          "supported", path, number, key))
                    continue
                body.append((number, key, value))
            elif key in _BLOCK_KEYS:
                block = (number, key, value)
            else:
                self.emit(path, number, key, value)
        if block is not None:
            self.problem(IniError("block is never closed (missing endfor/endif)", path, block[0], block[1]))
    def block_tokens(self, block: tuple[int, str, str], path: str) -> list[str | None]:
        """The values of ``%(_)`` for each repetition of the block body (none = skip it;
        ``None`` = apply once without replacing ``%(_)``)."""
        number, key, value = block
        if key == "else":
            return [] if value else [None]  # value is "1" when the if block ran
        key = _IF_ALIASES.get(key, key)
        value = _env_sub(value, self.environ)
        base = os.path.dirname(path)
        if key == "for":
            return list(value.split())
        if key == "for-times":
            if not value.isdigit() or int(value) > MAX_ENTRIES:
                raise IniError(f"needs a count from 0 to {MAX_ENTRIES}, got {value!r}", path, number, key)
            return [str(i) for i in range(1, int(value) + 1)]
        if key == "for-glob":
            return list(self.glob_tokens(value, base, path, number, key))
        if key == "for-readline":
            return list(self.readline_tokens(value, base, path, number, key))
        negate = key.startswith("if-not-")
        kind = key.removeprefix("if-not-") if negate else key.removeprefix("if-")
        token: str = value
        if kind in ("env", "opt"):
            name, eq, want = value.partition("=")
            have = self.environ.get(name) if kind == "env" else self.option_value(name)
            ok, token = (have == want if eq else have is not None), have or ""
        elif kind == "hostname":
            ok = socket.gethostname() == value
        else:
            target = os.path.join(base, value)
            try:
                ok = {"exists": os.path.lexists, "file": os.path.isfile, "dir": os.path.isdir}[kind](target)
            except ValueError:
                ok = False
        return [token] if ok != negate else []

    def option_value(self, name: str) -> str | None:
        """``if-opt``: the raw value of the first ``name`` set so far (uWSGI's rule), or None."""
        for e in (*self.before, *self.out):
            if e.key == name:
                return e.value
        return None

    @staticmethod
    def glob_tokens(pattern: str, base: str, path: str, number: int, key: str) -> list[str]:
        """``for-glob``: sorted matches, directories marked with a trailing ``/``; no match gives
        the pattern itself (uWSGI's GLOB_MARK | GLOB_NOCHECK). Relative to the file's directory."""
        if not pattern:
            raise IniError("needs a glob pattern", path, number, key)
        found: list[str] = []
        for m in glob.iglob(pattern, root_dir=base):
            if len(found) >= MAX_ENTRIES:
                raise IniError(f"more than {MAX_ENTRIES} matches", path, number, key, fatal=True)
            found.append(m + "/" if not m.endswith("/") and os.path.isdir(os.path.join(base, m)) else m)
        return sorted(found) or [pattern]

    def readline_tokens(self, name: str, base: str, path: str, number: int, key: str) -> list[str]:
        """``for-readline``: each line of the file (trailing CR/LF removed); the file counts
        towards the same size and file-count limits as an included ini file."""
        if not name:
            raise IniError("needs a file name", path, number, key)
        target = os.path.join(base, name)
        self.files += 1
        if self.files > MAX_FILES:
            raise IniError(f"more than {MAX_FILES} files read", path, number, key, fatal=True)
        try:
            data = _read_bytes(target)
        except _ReadError as exc:
            raise IniError(f"cannot read {target}: {exc}", path, number, key) from None
        lines = _decode(data, target)
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        return [line.rstrip("\r") for line in lines]

    def emit(self, path: str, number: int, key: str, value: str) -> None:
        if key in INCLUDE_KEYS:
            try:
                self.include(path, number, key, value)
            except IniError as exc:
                self.problem(exc)  # the include is skipped
            return
        if key in _REFUSED:
            self.problem(IniError(f"not supported by emperor: {_REFUSED[key]}", path, number, key))
            return
        if len(self.out) >= MAX_ENTRIES:
            raise IniError(f"more than {MAX_ENTRIES} entries", path, number, key, fatal=True)
        self.total += len(key) + len(value)
        if self.total > MAX_TOTAL_LEN:
            raise IniError(f"configuration larger than {MAX_TOTAL_LEN} characters", path, number, key,
                           fatal=True)
        self.out.append(Entry(key, value, path, number))

    def include(self, path: str, number: int, key: str, value: str) -> None:
        """Splice ``ini = other.ini[:section]`` here; relative to the including file's directory."""
        spec = _env_sub(value, self.environ)
        if "%(" in spec:
            raise IniError(f"placeholders are not expanded in include paths ({spec!r}): they are "
                           "resolved only after every file is read", path, number, key)
        if not spec:
            raise IniError("needs a file name", path, number, key)
        given, section = _split_spec(spec)
        if not given:
            given = path  # ':section' is a section of this file (uWSGI: of the last file read)
        if key == "include" and given.lower().endswith(_NOT_INI_EXT):
            raise IniError(f"not supported by emperor: only ini files are read ({given})", path, number, key)
        target = os.path.abspath(os.path.join(os.path.dirname(path), given))
        self.load_file(given, target, section, (path, number, key))


def load(spec: str, *, environ: Mapping[str, str] | None = None, cwd: str | None = None,
         before: Sequence[Entry] = (), last: str = "", problems: list[IniError] | None = None) -> list[Entry]:
    """Read ``path.ini`` or ``path.ini:section`` (default ``[uwsgi]``) into ordered entries.

    Magic variables are applied per file; ``ini``/``include`` lines are replaced by the included
    entries; logic blocks are unrolled. ``$(ENV)`` and ``%(name)`` in ordinary values are left
    for :func:`expand`. ``environ`` serves ``$(VAR)`` in include paths and ``if-env``; ``cwd``
    (default: the process's) anchors a relative ``spec`` and is ``%v``. ``before`` are the
    entries already given (the command line so far), which ``if-opt`` sees; ``last`` is the
    file ``:section`` alone refers to (the last file loaded, as in uWSGI).

    Without ``problems`` the first problem is raised. With it, a problem in a line, a block or
    an include is appended there and reading goes on without that line, block or include, so
    that one run reports them all; a file that cannot be read at all, and a limit, still raise.
    """
    env = os.environ if environ is None else environ
    try:
        base = os.getcwd() if cwd is None else cwd
    except OSError as exc:
        raise IniError(f"cannot determine the current directory: {exc.strerror}") from None
    given, section = _split_spec(spec)
    if not given:
        if not last:
            raise IniError(f"{spec!r}: no file name (':section' alone means a section of the last "
                           "file loaded, and none was)")
        given = last
    loader = _Loader(env, base, before, problems)
    try:
        path = os.path.abspath(os.path.join(base, given))
    except ValueError as exc:
        raise IniError(f"bad file name: {exc}") from None
    loader.load_file(given, path, section, None)
    return loader.out


# ----------------------------------------------------------------------------------------- expansion

def _env_sub(value: str, environ: Mapping[str, str]) -> str:
    """``$(VAR)``, ``$(VAR:-default)`` (unset or empty), ``$(VAR-default)`` (unset); else literal."""
    if "$(" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in environ:
            return environ[name]
        var, sep, default = name.partition(":-")
        if sep:
            return environ.get(var) or default
        var, sep, default = name.partition("-")
        if sep:
            return environ.get(var, default)
        return m.group(0)

    return _ENV_RE.sub(sub, value)


def _refs(text: str) -> Iterator[str]:
    for m in _PH_RE.finditer(text):
        yield m.group(1)


def _too_long(e: Entry) -> IniError:
    return IniError(f"value longer than {MAX_VALUE_LEN} characters after expansion", e.file, e.line, e.key)


def _substitute(text: str, resolved: Mapping[str, str], e: Entry) -> str:
    """Replace each defined ``%(name)`` by its resolved value, stopping at MAX_VALUE_LEN."""
    if "%(" not in text:
        return text
    parts: list[str] = []
    size = pos = 0
    for m in _PH_RE.finditer(text):
        piece = resolved.get(m.group(1), m.group(0))
        parts += (text[pos:m.start()], piece)
        size += m.start() - pos + len(piece)
        pos = m.end()
        if size > MAX_VALUE_LEN:
            raise _too_long(e)
    parts.append(text[pos:])
    return "".join(parts)


def expand(entries: list[Entry], environ: Mapping[str, str] | None = None) -> tuple[list[Entry], set[str]]:
    """Apply ``$(VAR)`` then ``%(name)`` to every value, after the whole tree is assembled.

    ``%(name)`` takes the fully expanded value of the *first* entry called ``name`` (or the first
    ``set-placeholder = name=value``), which is why forward references work. Unresolved
    references stay literal. Chains are resolved with an explicit stack: loops are an IniError,
    depth is limited only by the number of entries. ``set = k=v`` becomes the entry ``k = v``.
    Returns the new entries and every name used as ``%(name)``.
    """
    env = os.environ if environ is None else environ
    step: list[Entry] = []
    for e in entries:
        if e.key == "set":
            k, sep, v = e.value.partition("=")
            if not sep or not k.strip():
                raise IniError("needs name=value", e.file, e.line, e.key)
            e = Entry(k.strip(), v.strip(), e.file, e.line)
        value = _env_sub(e.value, env)
        if len(value) > MAX_VALUE_LEN:
            raise _too_long(e)
        step.append(replace(e, value=value) if value is not e.value else e)

    defs: dict[str, tuple[str, Entry]] = {}
    referenced: set[str] = set()
    for e in step:
        if e.key in PLACEHOLDER_KEYS:
            name, sep, value = e.value.partition("=")
            if not sep or not name.strip():
                raise IniError("needs name=value", e.file, e.line, e.key)
            defs.setdefault(name.strip(), (value.strip(), e))
        defs.setdefault(e.key, (e.value, e))
        if "%(" in e.value:
            referenced.update(_refs(e.value))

    resolved: dict[str, str] = {}

    def resolve(root: str) -> None:
        # Iterative depth-first walk; a name is resolved once all the names it uses are.
        path, onpath = [root], {root}
        todo = [_refs(defs[root][0])]
        while path:
            dep = next(todo[-1], None)
            if dep is None:
                name = path.pop()
                todo.pop()
                onpath.discard(name)
                text, origin = defs[name]
                resolved[name] = _substitute(text, resolved, origin)
            elif dep in resolved or dep not in defs:
                continue
            elif dep in onpath:
                cycle = [*path[path.index(dep):], dep]
                origin = defs[cycle[0]][1]
                raise IniError("placeholder loop: " + " -> ".join(cycle),
                               origin.file, origin.line, origin.key)
            else:
                path.append(dep)
                onpath.add(dep)
                todo.append(_refs(defs[dep][0]))

    out: list[Entry] = []
    total = 0
    for e in step:
        if "%(" in e.value:
            if defs[e.key][1] is e and e.value is defs[e.key][0]:  # the defining entry: resolve it as itself
                if e.key not in resolved:
                    resolve(e.key)
                e = replace(e, value=resolved[e.key])
            else:
                for name in _refs(e.value):
                    if name in defs and name not in resolved:
                        resolve(name)
                e = replace(e, value=_substitute(e.value, resolved, e))
        total += len(e.key) + len(e.value)
        if total > MAX_TOTAL_LEN:
            raise IniError(f"configuration larger than {MAX_TOTAL_LEN} characters after expansion",
                           e.file, e.line, e.key)
        out.append(e)
    return out, referenced
