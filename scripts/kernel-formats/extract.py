#!/usr/bin/env python3
"""Extracts printk-family format strings from a Linux source tree.

Usage: extract.py SRC_ROOT OUT_DIR        (SRC_ROOT: an unpacked linux-source-X.Y)
       extract.py --tar-patterns          (the tree paths this tool reads, one a line)

Writes OUT_DIR/<family>.jsonl, one JSON object a line, sorted by file and line:
  file, line, function  where the call is (function: the enclosing C function or macro)
  macro                 the printing call (printk, pr_err, dev_warn, ext4_error, ...)
  level                 emerg/alert/crit/err/warning/notice/info/debug/default/dynamic
  prefix                what the kernel prints before the call's format: pr_fmt/dev_fmt,
                        the `<driver> <device>: ` of dev_printk, or a wrapper's own text
                        (`EXT4-fs error (device %s): ...`), as printf text
  format                the call's own format (identity of the record in ignore lists)
  suffix                what a wrapper prints after the call's format (rare)
  args                  C expressions for the prefix's conversions, then the format's
                        and the suffix's, in order; implicit ones are written as calls
                        (`dev_driver_string(&udev->dev)`)
  cont                  true for a KERN_CONT/pr_cont piece that could not be joined to a
                        line start in the same function (printed as its own fragment)
  pieces                how many printk calls were joined into this line (when > 1)

Python 3.11, standard library only. Not a C compiler: it lexes the C text, resolves
string macros defined in the same tree, and knows the printing macros by name. Debug
macros (pr_debug, dev_dbg, dprintk, ...) are not extracted: compiled out, or enabled
only by dynamic debug; their count per family is printed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------
# What to read: families of files, each behind one or more nodemedic event kinds.
# A spec "path::f1,f2" takes only calls inside those functions; specs are tried in
# order, so a file can give a few functions to one family and the rest to another.
# ---------------------------------------------------------------------------------

FAMILIES: list[tuple[str, list[str]]] = [
    # Records that embed text a user chooses (comm, file names): issue 18.
    ("user-text-carriers", [
        "arch/x86/mm/fault.c::show_signal_msg",
        "arch/x86/kernel/traps.c::show_signal,fixup_iopl_exception",
        "arch/x86/kernel/cet.c::do_user_cp_fault",
        "arch/x86/kernel/umip.c::umip_printk",
        "arch/arm64/kernel/traps.c::arm64_show_signal",
        "arch/arm/mm/fault.c::__do_user_fault",
        "arch/arm/kernel/traps.c::do_undefinstr,bad_syscall,arm_syscall,baddataabort",
        "fs/exec.c",
        "kernel/signal.c",
        "kernel/audit.c",
        "security/yama/yama_lsm.c",
    ]),
    ("rcu", [
        "kernel/rcu/tree_stall.h",
        "kernel/rcu/tree_exp.h",
        "kernel/rcu/tasks.h",
    ]),
    ("hung-task", ["kernel/hung_task.c"]),
    ("lockup", [
        "kernel/watchdog.c",
        "kernel/watchdog_hld.c",
        "kernel/watchdog_perf.c",
        "kernel/watchdog_buddy.c",
        "arch/powerpc/kernel/watchdog.c",
        "arch/sparc/kernel/nmi.c",
    ]),
    ("workqueue", ["kernel/workqueue.c"]),
    ("oom", ["mm/oom_kill.c", "mm/memcontrol.c", "mm/memcontrol-v1.c"]),
    ("nfs", ["fs/nfs/*.c", "fs/nfs/*.h", "fs/lockd/*.c", "net/sunrpc/*.c"]),
    ("ext4", ["fs/ext4/*.c", "fs/jbd2/*.c"]),
    ("xfs", [
        "fs/xfs/xfs_fsops.c",
        "fs/xfs/xfs_error.c",
        "fs/xfs/xfs_message.c",
        "fs/xfs/xfs_log.c",
        "fs/xfs/xfs_buf.c",
    ]),
    ("btrfs", ["fs/btrfs/*.c"]),
    ("block", ["block/blk-core.c", "block/blk-mq.c", "fs/buffer.c"]),
    ("mmc", [
        "drivers/mmc/core/*.c",
        "drivers/mmc/host/sdhci*.c",
        "drivers/mmc/host/bcm2835*.c",
    ]),
    ("usb", [
        "drivers/usb/storage/uas.c",
        "drivers/usb/core/hub.c",
        # The host-controller core, the PCI glue (Pi 4's VL805) and the platform glue
        # (Pi 5's RP1 via dwc3); the other SoCs' glue drivers print probe messages only.
        "drivers/usb/host/xhci.c",
        "drivers/usb/host/xhci-ring.c",
        "drivers/usb/host/xhci-mem.c",
        "drivers/usb/host/xhci-hub.c",
        "drivers/usb/host/xhci-pci.c",
        "drivers/usb/host/xhci-plat.c",
    ]),
    ("power", ["drivers/hwmon/raspberrypi-hwmon.c"]),
    ("thermal", [
        "drivers/thermal/*.c",
        "drivers/thermal/broadcom/*.c",
        "drivers/thermal/intel/therm_throt.c",
        "arch/x86/kernel/cpu/mce/therm_throt.c",
    ]),
    ("netdev", ["net/core/dev.c"]),
    ("oops", [
        "arch/arm64/mm/fault.c",
        "arch/arm64/kernel/traps.c",
        "arch/arm64/kernel/process.c::__show_regs,show_regs,print_pstate",
        "arch/arm64/kernel/stacktrace.c::dump_backtrace,dump_backtrace_entry",
        "arch/arm/mm/fault.c",
        "arch/arm/kernel/traps.c",
        "arch/arm/kernel/process.c::__show_regs,show_regs,__show_regs_alloc_free",
        "arch/x86/mm/fault.c",
        "arch/x86/kernel/dumpstack.c",
        "arch/x86/kernel/traps.c",
        "arch/x86/kernel/process_64.c::__show_regs",
        "kernel/panic.c",
        "lib/bug.c",
        "lib/dump_stack.c",
        "kernel/module/main.c::print_modules",
    ]),
]

# Files read for context only (wrappers' own printk, string macros, Makefiles).
CONTEXT_FILES = [
    "fs/ext4/super.c", "fs/ext4/ext4.h", "fs/xfs/xfs_message.c", "fs/xfs/xfs_message.h",
    "fs/btrfs/messages.c", "fs/btrfs/messages.h", "fs/btrfs/super.c", "fs/btrfs/ctree.h",
    "drivers/usb/host/xhci.h", "kernel/rcu/tree.c", "kernel/rcu/update.c",
    "kernel/rcu/rcu.h", "fs/nfs/*.h", "fs/lockd/*.h", "net/sunrpc/*.h",
    "drivers/mmc/core/*.h", "drivers/mmc/host/*.h", "include/asm-generic/bug.h",
]

DEBUG_MACROS = re.compile(
    r"^(pr_debug|pr_devel|pr_debug_ratelimited|pr_debug_once|dev_dbg|dev_dbg_ratelimited|"
    r"dev_dbg_once|dev_vdbg|netdev_dbg|netif_dbg|dprintk|dprintk_rcu|dfprintk|dprintk_cont|"
    r"dfprintk_rcu|xhci_dbg|xhci_dbg_trace|btrfs_debug|btrfs_debug_rl|btrfs_debug_in_rcu|"
    r"btrfs_debug_rl_in_rcu|ext4_debug|jbd_debug|jbd2_debug|xfs_debug|mmc_dbg|DBG|"
    r"pr_devel_ratelimited|no_printk|sdhci_dbg|ifdebug|usb_dbg|hub_dbg|"
    r"dev_dbg_hub|uas_dbg|trace_printk|rcu_dbg|IS_ENABLED_DEBUG|dbg|DPRINTK)$"
)


def tar_patterns() -> list[str]:
    paths = []
    for _family, specs in FAMILIES:
        for s in specs:
            paths.append(s.split("::")[0])
    paths += CONTEXT_FILES
    dirs = sorted({os.path.dirname(p) for p in paths})
    paths += [d + "/Makefile" for d in dirs] + [d + "/*.h" for d in dirs]
    return sorted(set(paths))


# ---------------------------------------------------------------------------------
# Lexing
# ---------------------------------------------------------------------------------

def strip_comments(src: str) -> str:
    """Blanks out comments, keeping newlines and string/char literals intact."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "/" and i + 1 < n and src[i + 1] == "*":
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "/" and i + 1 < n and src[i + 1] == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c:
                if src[j] == "\\":
                    j += 1
                elif src[j] == "\n":
                    break
                j += 1
            out.append(src[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


TOKEN = re.compile(
    r'\s+|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[A-Za-z_]\w*|0[xX][0-9a-fA-F]+\w*|\d\w*'
    r"|##|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||\.\.\.|[^\s]",
    re.S,
)


@dataclass
class Tok:
    text: str
    pos: int

    @property
    def is_str(self) -> bool:
        return self.text.startswith('"')

    @property
    def is_ident(self) -> bool:
        return bool(re.match(r"[A-Za-z_]", self.text))


def tokenize(code: str, base: int = 0) -> list[Tok]:
    return [Tok(m.group(), base + m.start()) for m in TOKEN.finditer(code) if not m.group().isspace()]


def c_unescape(lit: str) -> str:
    """Body of a C string literal (with quotes) to its text."""
    body = lit[1:-1]
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(body):
            break
        e = body[i]
        simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
                  "b": "\b", "f": "\f", "v": "\v", "?": "?", "e": "\x1b"}
        if e in simple:
            out.append(simple[e])
            i += 1
        elif e == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 1:])
            out.append(chr(int(m.group(), 16)) if m else "x")
            i += 1 + (len(m.group()) if m else 0)
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i:])
            out.append(chr(int(m.group(), 8)))
            i += len(m.group())
        else:
            out.append(e)
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------
# Per-file context: preprocessor, functions, string macros
# ---------------------------------------------------------------------------------

KERN_LEVELS = {
    "KERN_EMERG": "\x010", "KERN_ALERT": "\x011", "KERN_CRIT": "\x012", "KERN_ERR": "\x013",
    "KERN_WARNING": "\x014", "KERN_NOTICE": "\x015", "KERN_INFO": "\x016",
    "KERN_DEBUG": "\x017", "KERN_DEFAULT": "", "KERN_CONT": "\x01c", "KERN_SOH": "\x01",
}
LEVEL_NAMES = {"0": "emerg", "1": "alert", "2": "crit", "3": "err", "4": "warning",
               "5": "notice", "6": "info", "7": "debug"}
LOGLEVEL_CONSTS = {"LOGLEVEL_EMERG": "emerg", "LOGLEVEL_ALERT": "alert",
                   "LOGLEVEL_CRIT": "crit", "LOGLEVEL_ERR": "err",
                   "LOGLEVEL_WARNING": "warning", "LOGLEVEL_NOTICE": "notice",
                   "LOGLEVEL_INFO": "info", "LOGLEVEL_DEBUG": "debug"}
BTRFS_TYPES = {"emerg": "emergency", "alert": "alert", "crit": "critical", "err": "error",
               "warning": "warning", "notice": "notice", "info": "info", "debug": "debug"}


@dataclass
class Define:
    name: str
    params: list[str] | None
    body: str
    pos: int


@dataclass
class SourceFile:
    rel: str
    code: str                      # comments blanked, directives kept
    defines: list[Define] = field(default_factory=list)
    includes: list[tuple[int, str]] = field(default_factory=list)
    functions: list[tuple[int, int, str]] = field(default_factory=list)  # start, end, name
    directive_spans: list[tuple[int, int]] = field(default_factory=list)


def parse_file(rel: str, text: str) -> SourceFile:
    code = strip_comments(text)
    sf = SourceFile(rel, code)
    for m in re.finditer(r"(?m)^[ \t]*#[ \t]*(\w+)((?:[^\n\\]|\\\n|\\)*)", code):
        sf.directive_spans.append((m.start(), m.end()))
        kind, rest = m.group(1), m.group(2).replace("\\\n", " ")
        if kind == "define":
            dm = re.match(r"\s*(\w+)(\(([^)]*)\))?(.*)", rest, re.S)
            if dm:
                params = None
                if dm.group(2) is not None:
                    params = [p.strip() for p in dm.group(3).split(",") if p.strip()]
                sf.defines.append(Define(dm.group(1), params, dm.group(4).strip(), m.start()))
        elif kind == "include":
            im = re.match(r'\s*"([^"]+)"', rest)
            if im:
                sf.includes.append((m.start(), im.group(1)))
    sf.functions = find_functions(code, sf.directive_spans)
    return sf


def blank_spans(code: str, spans: list[tuple[int, int]]) -> str:
    chars = list(code)
    for a, b in spans:
        for i in range(a, b):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


def find_functions(code: str, directive_spans) -> list[tuple[int, int, str]]:
    """Top-level `name(...) {` bodies: (body start, body end, name)."""
    plain = blank_spans(code, directive_spans)
    plain = re.sub(r'"(?:[^"\\\n]|\\.)*"', lambda m: '"' + " " * (len(m.group()) - 2) + '"', plain)
    plain = re.sub(r"'(?:[^'\\\n]|\\.)*'", lambda m: "'" + " " * (len(m.group()) - 2) + "'", plain)
    out = []
    depth = 0
    i = 0
    n = len(plain)
    while i < n:
        c = plain[i]
        if c == "{":
            if depth == 0:
                head = plain[max(0, i - 600):i]
                m = re.search(r"(\w+)\s*\((?:[^()]|\([^()]*\))*\)\s*(?:__\w+(?:\([^()]*\))?\s*)*$", head)
                name = m.group(1) if m else None
                if name in ("if", "for", "while", "switch", "sizeof", "__attribute__"):
                    name = None
                start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and name:
                out.append((start, i, name))
                name = None
            depth = max(depth, 0)
        i += 1
    return out


def function_at(sf: SourceFile, pos: int) -> str | None:
    for a, b, name in sf.functions:
        if a <= pos <= b:
            return name
    for d in sf.defines:
        if d.pos <= pos <= d.pos + 200 + len(d.body) * 2 and d.params is not None:
            # A printing call inside a macro body: name the macro.
            return d.name
    return None


class Tree:
    """An unpacked kernel tree, with the parsed files cached."""

    def __init__(self, root: str):
        self.root = root
        self.cache: dict[str, SourceFile | None] = {}
        self.global_strings: dict[str, str] | None = None

    def get(self, rel: str) -> SourceFile | None:
        if rel not in self.cache:
            path = os.path.join(self.root, rel)
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="replace") as f:
                    self.cache[rel] = parse_file(rel, f.read())
            else:
                self.cache[rel] = None
        return self.cache[rel]

    def glob(self, pattern: str) -> list[str]:
        d = os.path.dirname(pattern)
        full = os.path.join(self.root, d)
        if not os.path.isdir(full):
            return []
        names = sorted(os.listdir(full))
        return [os.path.join(d, n) for n in names
                if fnmatch.fnmatch(n, os.path.basename(pattern)) and os.path.isfile(os.path.join(full, n))]

    def modname(self, rel: str) -> str:
        """KBUILD_MODNAME: the module the object is linked into, per the Makefile."""
        d, base = os.path.split(rel)
        obj = os.path.splitext(base)[0] + ".o"
        mk = os.path.join(self.root, d, "Makefile")
        if os.path.isfile(mk):
            with open(mk, encoding="utf-8", errors="replace") as f:
                text = f.read().replace("\\\n", " ")
            for m in re.finditer(r"(?m)^\s*([\w-]+?)-(?:y|objs|\$\([A-Z0-9_]+\))\s*[:+]?=(.*)$", text):
                if obj in m.group(2).split() and m.group(1) != "obj":
                    return m.group(1)
        return os.path.splitext(base)[0]


# ---------------------------------------------------------------------------------
# Argument lists and format expressions
# ---------------------------------------------------------------------------------

def split_call(toks: list[Tok], open_idx: int) -> tuple[list[list[Tok]], int] | None:
    """Splits the arguments of the call whose `(` is toks[open_idx]; returns (args, close)."""
    depth = 0
    args: list[list[Tok]] = [[]]
    for i in range(open_idx, len(toks)):
        t = toks[i].text
        if t in "([{":
            depth += 1
            if depth == 1:
                continue
        elif t in ")]}":
            depth -= 1
            if depth == 0:
                return (args if args != [[]] else [], i)
        elif t == "," and depth == 1:
            args.append([])
            continue
        args[-1].append(toks[i])
    return None


def expr_text(toks: list[Tok]) -> str:
    out = ""
    for t in toks:
        if out and (re.match(r"\w", t.text[0]) and re.match(r"\w", out[-1])):
            out += " "
        elif out and t.text.startswith('"') and out[-1] == '"':
            out += " "
        out += t.text
    return out


class Unresolved(Exception):
    pass


class FileScope:
    """String macros and pr_fmt/dev_fmt as seen from one source file."""

    def __init__(self, tree: Tree, sf: SourceFile):
        self.tree = tree
        self.sf = sf
        self.includer: tuple[SourceFile, int] | None = None
        if sf.rel.endswith(".h"):
            self.includer = find_includer(tree, sf.rel)
        self.modname = tree.modname(self.includer[0].rel if self.includer else sf.rel)

    def visible_defines(self, pos: int) -> list[Define]:
        """Defines in effect at pos: the includer's (up to the include), local headers', then ours."""
        out: list[Define] = []
        if self.includer:
            inc_sf, inc_pos = self.includer
            out += self._with_local_headers(inc_sf, inc_pos)
        out += self._with_local_headers(self.sf, pos)
        return out

    def _with_local_headers(self, sf: SourceFile, pos: int) -> list[Define]:
        out: list[Define] = []
        for ipos, name in sf.includes:
            if ipos > pos:
                break
            hdr = self.tree.get(os.path.normpath(os.path.join(os.path.dirname(sf.rel), name)))
            if hdr:
                out += hdr.defines
        out += [d for d in sf.defines if d.pos < pos]
        return out

    def lookup(self, name: str, pos: int) -> Define | None:
        found = None
        for d in self.visible_defines(pos):
            if d.name == name:
                found = d
        return found

    def fmt_macro(self, which: str, pos: int) -> tuple[str, list[str]]:
        """pr_fmt or dev_fmt in effect at pos: (prefix text, prefix args)."""
        d = self.lookup(which, pos)
        # `#undef pr_fmt` after the define resets it.
        undef = [m.start() for m in re.finditer(r"(?m)^[ \t]*#[ \t]*undef[ \t]+" + which + r"\b", self.sf.code)]
        if d and any(d.pos < u < pos for u in undef if d in self.sf.defines):
            d = None
        if not d or not d.params:
            return "", []
        param = d.params[0]
        toks = tokenize(d.body)
        # `"rcu: " fmt`, `KBUILD_MODNAME ": " fmt`, `"%s: " fmt, __func__`
        try:
            cut = next(i for i, t in enumerate(toks) if t.text == param)
        except StopIteration:
            return "", []
        text = self.string_expr(toks[:cut], pos)
        rest = toks[cut + 1:]
        args = []
        if rest and rest[0].text == ",":
            args = [expr_text(a) for a in split_top(rest[1:])]
        return text, args

    def string_expr(self, toks: list[Tok], pos: int, depth: int = 0) -> str:
        """Concatenated string literals and string macros; raises Unresolved otherwise."""
        out = []
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.is_str:
                out.append(c_unescape(t.text))
            elif t.text in ("(", ")"):
                pass
            elif t.text in KERN_LEVELS:
                out.append(KERN_LEVELS[t.text])
            elif t.text == "KBUILD_MODNAME":
                out.append(self.modname)
            elif t.text in ("pr_fmt", "dev_fmt") and i + 1 < len(toks) and toks[i + 1].text == "(":
                sc = split_call(toks, i + 1)
                if not sc:
                    raise Unresolved(t.text)
                args, close = sc
                pre, pre_args = self.fmt_macro(t.text, pos)
                if pre_args:
                    raise Unresolved(t.text + " with arguments")
                out.append(pre + self.string_expr(args[0], pos, depth + 1))
                i = close
            elif t.is_ident and depth < 8:
                out.append(self.resolve_string_macro(t.text, pos, depth))
            else:
                raise Unresolved(t.text)
            i += 1
        return "".join(out)

    def resolve_string_macro(self, name: str, pos: int, depth: int) -> str:
        d = self.lookup(name, pos)
        if d is None:
            d = global_string_define(self.tree, name)
        if d is None or d.params is not None or not d.body:
            raise Unresolved(name)
        return self.string_expr(tokenize(d.body), pos, depth + 1)


def split_top(toks: list[Tok]) -> list[list[Tok]]:
    out: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        if t.text == "," and depth == 0:
            out.append([])
            continue
        out[-1].append(t)
    return [a for a in out if a]


def find_includer(tree: Tree, rel: str) -> tuple[SourceFile, int] | None:
    d, base = os.path.split(rel)
    for cand in tree.glob(os.path.join(d, "*.c")):
        sf = tree.get(cand)
        if sf:
            for pos, name in sf.includes:
                if name == base:
                    return sf, pos
    return None


GLOBAL_STRING_HEADERS = ["include/linux/printk.h", "include/linux/kern_levels.h"]


def global_string_define(tree: Tree, name: str) -> Define | None:
    """String macros defined once in the headers this tool reads (e.g. DRIVER_NAME)."""
    if tree.global_strings is None:
        tree.global_strings = {}
        for rel in list(tree.cache):
            sf = tree.cache[rel]
            if sf and rel.endswith(".h"):
                for d in sf.defines:
                    if d.params is None and d.body.startswith('"'):
                        tree.global_strings.setdefault(d.name, d)
    return tree.global_strings.get(name)


def level_of(fmt: str) -> tuple[str, str, bool]:
    """Strips KERN_ level markers: (level name, text, is KERN_CONT)."""
    level, cont = "default", False
    while fmt.startswith("\x01") and len(fmt) >= 2:
        c = fmt[1]
        if c == "c":
            cont = True
        elif c in LEVEL_NAMES:
            level = LEVEL_NAMES[c]
        else:
            break
        fmt = fmt[2:]
    return level, fmt, cont


CONVERSION = re.compile(
    r"%(?P<flags>[-+ #0]*)(?P<width>\*|\d+)?(?:\.(?P<prec>\*|\d+))?"
    r"(?P<len>hh|h|ll|l|L|z|j|t)?(?P<conv>[diouxXcsp%eEfgGn])"
    r"(?P<ext>(?<=p)[A-Za-z]+\d*)?"
)


def count_args(fmt: str) -> int:
    n = 0
    for m in CONVERSION.finditer(fmt):
        if m.group("conv") == "%":
            continue
        n += 1 + (m.group("width") == "*") + (m.group("prec") == "*")
    return n


# ---------------------------------------------------------------------------------
# Printing calls
# ---------------------------------------------------------------------------------

LEVEL_WORDS = {"emerg": "emerg", "alert": "alert", "crit": "crit", "err": "err",
               "warn": "warning", "warning": "warning", "notice": "notice", "info": "info",
               "cont": "cont"}


@dataclass
class CallSpec:
    fmt: int                       # index of the format argument
    level: str | int               # fixed level, or index of a level argument
    prefix: str = "none"           # none | pr_fmt | dev | netdev | sdev | scmd | shost | wrapper
    dev: int = 0                   # index of the device argument
    cont: bool = False
    wrapper: str | None = None     # key into WRAPPERS
    template: str | None = None    # key into TEMPLATES


SUFFIX = r"(?:_once|_ratelimited|_deferred|_deferred_once|_rl)?"


def call_spec(name: str) -> CallSpec | None:
    m = re.fullmatch(r"pr_(emerg|alert|crit|err|warn|warning|notice|info|cont)" + SUFFIX, name)
    if m:
        lvl = LEVEL_WORDS[m.group(1)]
        if lvl == "cont":
            return CallSpec(0, "default", "none", cont=True)
        return CallSpec(0, lvl, "pr_fmt")
    if re.fullmatch(r"printk" + SUFFIX + r"|_printk|printk_deferred", name):
        return CallSpec(0, "default")
    m = re.fullmatch(r"dev_(emerg|alert|crit|err|warn|notice|info)" + SUFFIX, name)
    if m:
        return CallSpec(1, LEVEL_WORDS[m.group(1)], "dev", dev=0)
    if name in ("dev_printk", "dev_printk_ratelimited"):
        return CallSpec(2, 0, "dev", dev=1)
    if name == "dev_err_probe":
        return CallSpec(2, "err", "dev_probe", dev=0)
    m = re.fullmatch(r"netdev_(emerg|alert|crit|err|warn|notice|info)" + SUFFIX, name)
    if m:
        return CallSpec(1, LEVEL_WORDS[m.group(1)], "netdev", dev=0)
    if name == "netdev_printk":
        return CallSpec(2, 0, "netdev", dev=1)
    if name in ("sdev_printk", "scmd_printk", "shost_printk"):
        return CallSpec(2, 0, name.split("_")[0], dev=1)
    m = re.fullmatch(r"(WARN|WARN_ONCE|WARN_RATELIMIT|WARN_TAINT|WARN_TAINT_ONCE)", name)
    if m:
        return CallSpec(2 if "TAINT" in name else 1, "warning", "none")
    if name == "panic":
        return CallSpec(0, "emerg", "panic")
    if name == "nmi_panic":
        return CallSpec(1, "emerg", "panic")
    if name in WRAPPERS:
        return WRAPPERS[name]
    if name in TEMPLATES_CALLS:
        return TEMPLATES_CALLS[name]
    return None


# Wrappers that print the call's format through `%pV` inside their own printk: the text
# around `%pV` comes from the wrapper's source in the same tree (so it follows the
# version), found in `function` of `file`; `params` names the wrapper's parameters in
# call order, so the wrapper's own args can be rewritten into the call's expressions.
@dataclass
class Wrapper:
    file: str
    function: str
    params: list[str | None]       # call arg i binds the wrapper parameter params[i]
    fmt: int
    level: str
    pick: str = "fewest"           # which %pV printk in the function (fewest conversions)
    drop_leading: tuple[str, ...] = ()   # leading "%s"/"%d" args that carry the level


EXT4_ERR = ("fs/ext4/super.c", "err")
WRAPPER_DEFS: dict[str, Wrapper] = {
    # ext4.h: ext4_error(sb, fmt) -> __ext4_error(sb, __func__, __LINE__, false, 0, 0, fmt)
    "ext4_error": Wrapper("fs/ext4/super.c", "__ext4_error", ["sb"], 1, "crit"),
    "ext4_error_err": Wrapper("fs/ext4/super.c", "__ext4_error", ["sb", "error"], 2, "crit"),
    "ext4_abort": Wrapper("fs/ext4/super.c", "__ext4_error", ["sb", "error"], 2, "crit"),
    "ext4_error_inode": Wrapper("fs/ext4/super.c", "__ext4_error_inode",
                                ["inode", "function", "line", "block"], 4, "crit"),
    "ext4_error_inode_err": Wrapper("fs/ext4/super.c", "__ext4_error_inode",
                                    ["inode", "function", "line", "block", "error"], 5, "crit"),
    "EXT4_ERROR_INODE": Wrapper("fs/ext4/super.c", "__ext4_error_inode", ["inode"], 1, "crit"),
    "EXT4_ERROR_INODE_ERR": Wrapper("fs/ext4/super.c", "__ext4_error_inode",
                                    ["inode", "error"], 2, "crit"),
    "ext4_error_inode_block": Wrapper("fs/ext4/super.c", "__ext4_error_inode",
                                      ["inode", "block", "error"], 3, "crit"),
    "ext4_error_file": Wrapper("fs/ext4/super.c", "__ext4_error_file",
                               ["file", "function", "line", "block"], 4, "crit"),
    "EXT4_ERROR_FILE": Wrapper("fs/ext4/super.c", "__ext4_error_file",
                               ["file", "block"], 2, "crit"),
    "ext4_warning": Wrapper("fs/ext4/super.c", "__ext4_warning", ["sb"], 1, "warning"),
    "ext4_warning_inode": Wrapper("fs/ext4/super.c", "__ext4_warning_inode", ["inode"], 1,
                                  "warning"),
    "ext4_msg": Wrapper("fs/ext4/super.c", "__ext4_msg", ["sb", "prefix"], 2, "arg1",
                        pick="first", drop_leading=("prefix",)),
    "ext4_grp_locked_error": Wrapper("fs/ext4/super.c", "__ext4_grp_locked_error",
                                     ["sb", "grp", "ino", "block"], 4, "crit", pick="joined"),
    # xfs_message.h: xfs_alert(mp, fmt) -> xfs_printk_level(KERN_ALERT, mp, fmt)
    **{f"xfs_{lv}": Wrapper("fs/xfs/xfs_message.c", "__xfs_printk", ["mp"], 1, lv2,
                            pick="first", drop_leading=("level",))
       for lv, lv2 in [("emerg", "emerg"), ("alert", "alert"), ("crit", "crit"),
                       ("err", "err"), ("warn", "warning"), ("notice", "notice"),
                       ("info", "info")]},
    **{f"xfs_{lv}_ratelimited": Wrapper("fs/xfs/xfs_message.c", "__xfs_printk", ["mp"], 1,
                                        lv2, pick="first", drop_leading=("level",))
       for lv, lv2 in [("emerg", "emerg"), ("alert", "alert"), ("crit", "crit"),
                       ("err", "err"), ("warn", "warning"), ("notice", "notice"),
                       ("info", "info")]},
    **{f"xfs_{lv}_once": Wrapper("fs/xfs/xfs_message.c", "__xfs_printk", ["mp"], 1,
                                 lv2, pick="first", drop_leading=("level",))
       for lv, lv2 in [("emerg", "emerg"), ("alert", "alert"), ("crit", "crit"),
                       ("err", "err"), ("warn", "warning"), ("notice", "notice"),
                       ("info", "info")]},
    # xfs_message.c: xfs_buf_alert_ratelimited(bp, rlmsg, fmt, ...) -> xfs_alert(mp, "%pV")
    "xfs_buf_alert_ratelimited": Wrapper("fs/xfs/xfs_message.c", "__xfs_printk", ["bp", None],
                                         2, "alert", pick="first", drop_leading=("level",)),
    "xfs_alert_tag": Wrapper("fs/xfs/xfs_message.c", "__xfs_printk", ["mp", None], 2, "alert",
                             pick="first", drop_leading=("level",)),
    # btrfs: btrfs_err(fs_info, fmt) -> _btrfs_printk(fs_info, [KERN_ERR|LOGLEVEL_ERR] fmt)
    **{f"btrfs_{lv}{sfx}": Wrapper("btrfs", "_btrfs_printk", ["fs_info"], 1, lv2,
                                   pick="first", drop_leading=("lvl", "level"))
       for lv, lv2 in [("emerg", "emerg"), ("alert", "alert"), ("crit", "crit"),
                       ("err", "err"), ("warn", "warning"), ("notice", "notice"),
                       ("info", "info")]
       for sfx in ("", "_rl", "_in_rcu", "_rl_in_rcu")},
    "btrfs_handle_fs_error": Wrapper("btrfs", "__btrfs_handle_fs_error",
                                     ["fs_info", "error"], 2, "crit", pick="first"),
    "xhci_err": None, "xhci_warn": None, "xhci_info": None, "xhci_warn_ratelimited": None,
}

WRAPPERS: dict[str, CallSpec] = {}
for _name, _w in WRAPPER_DEFS.items():
    if _w is None:
        lvl = {"xhci_err": "err", "xhci_warn": "warning", "xhci_info": "info",
               "xhci_warn_ratelimited": "warning"}[_name]
        # xhci.h: xhci_err(xhci, fmt) -> dev_err(xhci_to_hcd(xhci)->self.controller, fmt)
        WRAPPERS[_name] = CallSpec(1, lvl, "xhci", dev=0)
    else:
        WRAPPERS[_name] = CallSpec(_w.fmt, _w.level, "wrapper", wrapper=_name)


# Helpers whose own printk is the line, with one call argument filled in (a literal
# at the call site becomes part of the format): uas_log_cmd_state(cmnd, "prefix", st),
# die("Oops - BUG", regs, esr), print_vma_addr(KERN_CONT " in ", ip).
@dataclass
class Template:
    file: str
    function: str
    params: list[str]              # call arg i binds params[i]
    literal: str                   # the parameter a literal call argument is put into


TEMPLATES: dict[tuple[str, str], Template] = {
    ("drivers/usb/storage/uas.c", "uas_log_cmd_state"):
        Template("drivers/usb/storage/uas.c", "uas_log_cmd_state", ["cmnd", "prefix", "status"],
                 "prefix"),
    ("arch/arm64/", "die"): Template("arch/arm64/kernel/traps.c", "__die",
                                     ["str", "regs", "err"], "str"),
    ("arch/arm/", "die"): Template("arch/arm/kernel/traps.c", "__die",
                                   ["str", "regs", "err"], "str"),
    ("arch/x86/", "die"): Template("arch/x86/kernel/dumpstack.c", "__die_header",
                                   ["str", "regs", "err"], "str"),
    ("arch/arm64/", "arm64_notify_die"): Template("arch/arm64/kernel/traps.c", "__die",
                                                  ["str", "regs"], "str"),
}
TEMPLATES_CALLS = {
    "uas_log_cmd_state": CallSpec(1, "info", "template", template="uas_log_cmd_state"),
    "die": CallSpec(0, "emerg", "template", template="die"),
    "print_vma_addr": CallSpec(0, "default", "vma", cont=True),
    "pr_cont_cgroup_path": CallSpec(-1, "default", "cgroup", cont=True),
    "pr_cont_cgroup_name": CallSpec(-1, "default", "cgroup", cont=True),
    "scsi_print_command": CallSpec(-1, "info", "scsi_cdb"),
}


# ---------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------

@dataclass
class Record:
    file: str
    line: int
    function: str | None
    macro: str
    level: str
    prefix: str
    format: str
    args: list[str]
    suffix: str = ""
    cont: bool = False
    pieces: int = 1
    ends_line: bool = True
    pos: int = 0

    def to_json(self) -> dict:
        d = {"file": self.file, "line": self.line, "function": self.function,
             "macro": self.macro, "level": self.level, "prefix": self.prefix,
             "format": self.format}
        if self.suffix:
            d["suffix"] = self.suffix
        d["args"] = self.args
        if self.cont:
            d["cont"] = True
        if self.pieces > 1:
            d["pieces"] = self.pieces
        return d


class Extractor:
    def __init__(self, tree: Tree):
        self.tree = tree
        self.skipped_debug = 0
        self.unresolved: list[str] = []
        self._wrapper_cache: dict = {}

    # -- helpers' own printk --------------------------------------------------------

    def printk_calls_in(self, rel: str, function: str) -> list[tuple[list[list[Tok]], str]]:
        """(args, macro) of printing calls inside `function` of `rel`."""
        sf = self.tree.get(rel)
        if not sf:
            return []
        out = []
        for a, b, name in sf.functions:
            if name != function:
                continue
            toks = tokenize(sf.code[a:b], a)
            for i, t in enumerate(toks):
                if (t.text in ("printk", "_printk", "pr_emerg", "pr_err", "pr_crit", "pr_alert",
                               "pr_warn", "pr_info", "panic", "scmd_printk", "pr_cont")
                        and i + 1 < len(toks) and toks[i + 1].text == "("):
                    sc = split_call(toks, i + 1)
                    if sc:
                        out.append((sc[0], t.text))
        return out

    def wrapper_parts(self, key: str, null: bool = False) -> tuple[str, str, list[str], list[str]] | None:
        """(prefix, suffix, prefix args, suffix args) of a %pV wrapper; `null`: the call
        passes NULL for the superblock/mount, so the wrapper's branch without it prints."""
        if (key, null) in self._wrapper_cache:
            return self._wrapper_cache[(key, null)]
        w = WRAPPER_DEFS[key]
        files = [w.file]
        if w.file == "btrfs":
            files = ["fs/btrfs/messages.c", "fs/btrfs/super.c"]
        result = None
        for rel in files:
            sf = self.tree.get(rel)
            if not sf:
                continue
            scope = FileScope(self.tree, sf)
            cands = []
            calls = self.printk_calls_in(rel, w.function)
            for idx, (args, macro) in enumerate(calls):
                fmt_i = 0
                if macro == "panic":
                    continue
                try:
                    fmt = scope.string_expr(args[fmt_i], 0)
                except (Unresolved, IndexError):
                    continue
                arg_exprs = [expr_text(a) for a in args[fmt_i + 1:]]
                if w.pick == "joined" and "%pV" not in fmt:
                    # __ext4_grp_locked_error: head + KERN_CONT pieces, the last one %pV.
                    continue
                if "%pV" not in fmt:
                    continue
                if w.pick == "joined":
                    head = calls[0]
                    pieces = []
                    for a2, _m in calls[:idx]:
                        try:
                            f2 = scope.string_expr(a2[0], 0)
                        except Unresolved:
                            continue
                        pieces.append((f2, [expr_text(x) for x in a2[1:]]))
                    pieces.append((fmt, arg_exprs))
                    fmt = "".join(level_of(p[0])[1] for p in pieces)
                    arg_exprs = [x for p in pieces for x in p[1]]
                    del head
                _lvl, fmt, _c = level_of(fmt)
                cands.append((count_args(fmt), fmt, arg_exprs))
            if cands:
                if w.pick == "fewest" or null:
                    cands.sort(key=lambda c: c[0])
                n, fmt, arg_exprs = cands[0]
                pre, post = fmt.split("%pV", 1)
                # Drop a leading level conversion (`%s` of KERN_x, `\001%d` of btrfs).
                pre_n = count_args(pre)
                pre_args = arg_exprs[:pre_n]
                vaf_arg = arg_exprs[pre_n] if pre_n < len(arg_exprs) else ""
                post_args = arg_exprs[pre_n + 1:]
                if pre.startswith("\x01%d") and pre_args:
                    pre, pre_args = pre[3:], pre_args[1:]
                for lead in w.drop_leading:
                    if pre.startswith("%s") and pre_args and pre_args[0] == lead:
                        pre, pre_args = pre[2:], pre_args[1:]
                if post.endswith("\n"):
                    post = post[:-1]
                del vaf_arg
                result = (pre, post, pre_args, post_args)
                break
        self._wrapper_cache[(key, null)] = result
        return result

    def template_parts(self, call_file: str, name: str) -> tuple[Template, str, list[str], str] | None:
        for (where, tname), t in TEMPLATES.items():
            if tname == name and call_file.startswith(where):
                sf = self.tree.get(t.file)
                if not sf:
                    return None
                scope = FileScope(self.tree, sf)
                for args, macro in self.printk_calls_in(t.file, t.function):
                    fi = call_spec(macro).fmt
                    try:
                        fmt = scope.string_expr(args[fi], 0)
                    except (Unresolved, IndexError):
                        continue
                    exprs = [expr_text(a) for a in args[fi + 1:]]
                    if t.literal in exprs:
                        lvl, fmt, _c = level_of(fmt)
                        if macro.startswith("pr_"):
                            lvl = {"pr_emerg": "emerg", "pr_err": "err", "pr_crit": "crit",
                                   "pr_alert": "alert", "pr_warn": "warning",
                                   "pr_info": "info"}.get(macro, lvl)
                        return t, fmt, exprs, lvl if macro != "scmd_printk" else "info"
        return None

    # -- one file ---------------------------------------------------------------------

    def extract_file(self, rel: str, functions: set[str] | None) -> list[Record]:
        sf = self.tree.get(rel)
        if not sf:
            return []
        scope = FileScope(self.tree, sf)
        toks = tokenize(sf.code)
        local_funcs = {name for _a, _b, name in sf.functions}
        # Function-like macros of this file and its local headers, for wrappers such as
        # sdhci.c's `#define SDHCI_DUMP(f, x...) pr_err("%s: " DRIVER_NAME ": " f, ...)`.
        local_macros = {d.name: d for d in scope.visible_defines(len(sf.code)) if d.params is not None}
        items: list[tuple[str, object]] = []   # ("rec", Record) | ("call", (callee, caller))
        i = 0
        n = len(toks)
        while i < n:
            t = toks[i]
            if not (t.is_ident and i + 1 < n and toks[i + 1].text == "("):
                i += 1
                continue
            name = t.text
            prev = toks[i - 1].text if i else ""
            if prev in (".", "->") or (re.fullmatch(r"[A-Za-z_]\w*", prev)
                                       and prev not in ("return", "else", "do", "case")):
                # A member, a declaration or definition (`void name(`), a `#define name(`.
                i += 1
                continue
            if DEBUG_MACROS.match(name):
                fn = function_at(sf, t.pos)
                if functions is None or fn in functions:
                    self.skipped_debug += 1
                i += 1
                continue
            spec = call_spec(name)
            if spec is None and name in local_macros and name not in local_funcs:
                sc = split_call(toks, i + 1)
                if sc:
                    fn = function_at(sf, t.pos)
                    line = sf.code.count("\n", 0, t.pos) + 1
                    rec = self.expand_macro(scope, local_macros[name], sc[0], rel, line, fn, t.pos)
                    if rec is not None:
                        items.append(("rec", rec))
                        i = sc[1] + 1
                        continue
            if spec is None:
                if name in local_funcs:
                    items.append(("call", (name, function_at(sf, t.pos))))
                i += 1
                continue
            sc = split_call(toks, i + 1)
            if not sc:
                i += 1
                continue
            args, close = sc
            fn = function_at(sf, t.pos)
            line = sf.code.count("\n", 0, t.pos) + 1
            rec = self.make_record(scope, rel, line, fn, name, spec, args, t.pos)
            if rec is not None:
                items.append(("rec", rec))
            i = close + 1
        records = self.join_continuations(items)
        if functions is not None:
            records = [r for r in records if r.function in functions]
        return records

    def expand_macro(self, scope: FileScope, d: Define, call_args: list[list[Tok]], rel, line,
                     fn, pos) -> Record | None:
        """A call of a local macro whose body is one printing call: substitute the
        macro's parameters into that call and extract it under the macro's name."""
        body = tokenize(d.body)
        for j, bt in enumerate(body):
            if not (bt.is_ident and j + 1 < len(body) and body[j + 1].text == "("):
                continue
            inner = call_spec(bt.text)
            if inner is None or bt.text in TEMPLATES_CALLS or DEBUG_MACROS.match(bt.text):
                continue
            sc = split_call(body, j + 1)
            if not sc:
                return None
            mapping: dict[str, list[list[Tok]]] = {}
            variadic = None
            for k, p in enumerate(d.params or []):
                if p.endswith("..."):
                    variadic = p[:-3].strip() or "__VA_ARGS__"
                    mapping[variadic] = call_args[k:]
                else:
                    mapping[p] = [call_args[k]] if k < len(call_args) else [[]]
            new_args: list[list[Tok]] = []
            for a in sc[0]:
                toks2 = [t for t in a if t.text != "##"]
                if len(toks2) == 1 and toks2[0].text == variadic:
                    new_args.extend(mapping[variadic])
                    continue
                out: list[Tok] = []
                for t in toks2:
                    if t.text in mapping and t.text != variadic:
                        for grp in mapping[t.text]:
                            out.extend(grp)
                    else:
                        out.append(t)
                new_args.append(out)
            if inner.fmt >= len(new_args):
                return None
            uses_param = any(t.text in mapping for t in sc[0][inner.fmt]) if inner.fmt < len(sc[0]) else False
            if not uses_param:
                return None
            rec = self.make_record(scope, rel, line, fn, bt.text, inner, new_args, pos)
            if rec is not None:
                rec.macro = d.name
            return rec
        return None

    def make_record(self, scope: FileScope, rel, line, fn, name, spec: CallSpec, args, pos):
        arg_exprs = [expr_text(a) for a in args]
        if spec.prefix == "scsi_cdb":
            return Record(rel, line, fn, name, "info", "sd %s: [%s] tag#%d ", "CDB: %s",
                          ["dev_name(&cmnd->device->sdev_gendev)", "disk_name(cmnd)",
                           "scsi_cmd_to_rq(cmnd)->tag", "scsi_cdb_text(cmnd)"], pos=pos)
        if spec.prefix == "cgroup":
            # kernel/cgroup/cgroup.c pr_cont_cgroup_path: pr_cont("%s", path)
            return Record(rel, line, fn, name, "cont", "", "%s",
                          [f"cgroup_path({arg_exprs[0] if arg_exprs else ''})"],
                          cont=True, ends_line=False, pos=pos)
        if spec.prefix == "vma":
            try:
                lead = scope.string_expr(args[0], pos)
            except (Unresolved, IndexError):
                return None
            _l, lead, _c = level_of(lead)
            # mm/memory.c print_vma_addr: printk("%s%s[%lx+%lx]", prefix, kbasename(file), ...)
            return Record(rel, line, fn, name, "default", "", lead + "%s[%lx+%lx]",
                          ["vma_file_name(" + arg_exprs[1] + ")", "vma->vm_start", "vma_size"],
                          cont=True, ends_line=False, pos=pos)
        if spec.fmt >= len(args):
            return None
        if spec.prefix == "template":
            got = self.template_parts(rel, name)
            if not got:
                return None
            t, tfmt, texprs, lvl = got
            bind = dict(zip(t.params, arg_exprs))
            lit = bind.get(t.literal, "")
            fmt_text, out_args = "", []
            # Put the literal (or the caller's function name for __func__) into the format.
            conv_i = 0
            pieces = re.split(r"(%[-+ #0]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|h|ll|l|L|z|j|t)?[diouxXcsp%](?:[A-Za-z]+\d*)?)", tfmt)
            for p in pieces:
                if not p.startswith("%") or p == "%%":
                    fmt_text += p
                    continue
                e = texprs[conv_i] if conv_i < len(texprs) else "?"
                conv_i += 1
                if e == t.literal and p == "%s":
                    if lit.startswith('"'):
                        try:
                            fmt_text += scope.string_expr(args[t.params.index(t.literal)], pos).replace("%", "%%")
                            continue
                        except Unresolved:
                            pass
                    if lit == "__func__":
                        fmt_text += (fn or "?")
                        continue
                    out_args.append(lit)
                else:
                    out_args.append(bind.get(e, e) if re.fullmatch(r"\w+", e) else e)
                fmt_text += p
            prefix, pre_args = "", []
            if name == "uas_log_cmd_state":
                prefix = "sd %s: [%s] tag#%d "
                pre_args = ["dev_name(&cmnd->device->sdev_gendev)", "disk_name(cmnd)",
                            "scsi_cmd_to_rq(cmnd)->tag"]
            fmt_text = fmt_text.rstrip("\n")
            return Record(rel, line, fn, name, lvl, prefix, fmt_text, pre_args + out_args, pos=pos)
        if arg_exprs[spec.fmt] == "NULL":
            return None   # btrfs_handle_fs_error(fs_info, err, NULL): the wrapper's own line
        try:
            fmt = scope.string_expr(args[spec.fmt], pos)
        except Unresolved as e:
            self.unresolved.append(f"{rel}:{line}: {name}: {e}")
            return None
        level, fmt, cont = level_of(fmt)
        fmt_args = arg_exprs[spec.fmt + 1:]
        if fmt.startswith("%s") and fmt_args and (
                re.fullmatch(r"(log_?lvl|lvl|log_level|kern_level|level)", fmt_args[0])
                or (fmt_args[0] == "prefix" and not fmt.startswith("%s "))):
            # printk("%s...", loglvl): the level marker, not text.
            fmt, fmt_args = fmt[2:], fmt_args[1:]
            level = "dynamic"
        if isinstance(spec.level, int):
            lv = expr_text(args[spec.level]) if spec.level < len(args) else ""
            level = (LEVEL_NAMES.get(KERN_LEVELS.get(lv, "\x01?")[1:2])
                     or LOGLEVEL_CONSTS.get(lv) or "dynamic")
        elif spec.level == "arg1":
            lv = expr_text(args[1]) if len(args) > 1 else ""
            level = LEVEL_NAMES.get(KERN_LEVELS.get(lv, "\x01?")[1:2]) or "dynamic"
        elif spec.level != "default":
            level = spec.level
        if spec.cont:
            cont = True
        prefix, pre_args, suffix, post_args = "", [], "", []
        dev = arg_exprs[spec.dev] if spec.dev < len(arg_exprs) else "dev"
        if spec.prefix == "pr_fmt":
            prefix, pre_args = scope.fmt_macro("pr_fmt", pos)
        elif spec.prefix in ("dev", "dev_probe"):
            # drivers/base/core.c __dev_printk: "%s %s: " with the driver and device names.
            dprefix, dargs = scope.fmt_macro("dev_fmt", pos)
            prefix = "%s %s: " + dprefix
            pre_args = [f"dev_driver_string({dev})", f"dev_name({dev})"] + dargs
            if spec.prefix == "dev_probe":
                # dev_err_probe: dev_err(dev, "error %pe: %pV", ERR_PTR(err), &vaf)
                prefix += "error %pe: "
                pre_args.append(f"ERR_PTR({arg_exprs[1]})")
        elif spec.prefix == "xhci":
            prefix = "%s %s: "
            pre_args = [f"dev_driver_string(xhci_to_hcd({dev})->self.controller)",
                        f"dev_name(xhci_to_hcd({dev})->self.controller)"]
        elif spec.prefix == "netdev":
            # net/core/dev.c __netdev_printk: "%s %s %s%s: " (driver, bus id, name, state)
            prefix = "%s %s %s%s: "
            pre_args = [f"dev_driver_string({dev}->dev.parent)", f"dev_name({dev}->dev.parent)",
                        f"netdev_name({dev})", f"netdev_reg_state({dev})"]
        elif spec.prefix == "sdev":
            # drivers/scsi/scsi_logging.c sdev_prefix_printk: dev_printk + "[disk] " when known
            prefix = "%s %s: "
            pre_args = [f"dev_driver_string(&{dev}->sdev_gendev)", f"dev_name(&{dev}->sdev_gendev)"]
        elif spec.prefix == "scmd":
            # scmd_printk: sdev_prefix_printk(l, sdev, disk, "tag#%d " fmt, tag)
            prefix = "%s %s: [%s] tag#%d "
            pre_args = [f"dev_driver_string(&{dev}->device->sdev_gendev)",
                        f"dev_name(&{dev}->device->sdev_gendev)", f"disk_name({dev})",
                        f"scsi_cmd_to_rq({dev})->tag"]
        elif spec.prefix == "shost":
            prefix = "%s %s: "
            pre_args = [f"dev_driver_string(&{dev}->shost_gendev)", f"dev_name(&{dev}->shost_gendev)"]
        elif spec.prefix == "panic":
            # kernel/panic.c: pr_emerg("Kernel panic - not syncing: %s\n", buf)
            prefix = "Kernel panic - not syncing: "
        elif spec.prefix == "wrapper":
            parts = self.wrapper_parts(spec.wrapper, null=arg_exprs[0] == "NULL")
            if parts is None:
                self.unresolved.append(f"{rel}:{line}: {name}: wrapper source not found")
                return None
            prefix, suffix, pre_args, post_args = parts
            w = WRAPPER_DEFS[spec.wrapper]
            bind = {p: arg_exprs[k] for k, p in enumerate(w.params) if p and k < len(arg_exprs)}
            bind.setdefault("function", "__func__")
            bind.setdefault("line", "__LINE__")
            pre_args = [substitute(a, bind) for a in pre_args]
            post_args = [substitute(a, bind) for a in post_args]
            if w.file == "btrfs" and "%s" in prefix and pre_args and pre_args[0] == "type":
                # logtypes[level] in the source: put the word in.
                prefix = prefix.replace("%s", BTRFS_TYPES.get(level, level), 1)
                pre_args = pre_args[1:]
        ends_nl = fmt.endswith("\n")
        if ends_nl:
            fmt = fmt[:-1]
        if cont:
            ends_line = ends_nl
        else:
            # A line without its newline is open for KERN_CONT pieces (printk.c joins them).
            ends_line = ends_nl or spec.prefix in ("wrapper", "panic", "template")
        rec = Record(rel, line, fn, name, "cont" if cont and level == "default" else level,
                     prefix, fmt, pre_args + fmt_args + post_args, suffix=suffix, cont=cont,
                     ends_line=ends_line, pos=pos)
        return rec

    def join_continuations(self, items: list[tuple[str, object]]) -> list[Record]:
        """Joins KERN_CONT pieces to the line they continue: in the same function, or at
        the start of a function of the same file called while the line is open (e.g.
        workqueue.c's `pr_emerg("BUG: workqueue lockup - pool"); pr_cont_pool_info(pool);`).
        Pieces that continue nothing found here stay as records with `cont`."""
        by_fn: dict[str | None, list[Record]] = {}
        for kind, it in items:
            if kind == "rec":
                by_fn.setdefault(it.function, []).append(it)

        def leading_conts(fn: str) -> list[Record]:
            out = []
            for r in by_fn.get(fn, []):
                if not r.cont:
                    break
                out.append(r)
            return out

        out: list[Record] = []
        consumed: set[int] = set()
        open_rec: Record | None = None

        def append(piece: Record) -> bool:
            """Appends a piece to the open line; True when the piece ends the line."""
            open_rec.format += piece.format
            open_rec.args += piece.args
            open_rec.pieces += 1
            return piece.ends_line

        for kind, it in items:
            if kind == "call":
                callee, caller = it
                if open_rec is not None and open_rec.function == caller and callee != caller:
                    for p in leading_conts(callee):
                        consumed.add(id(p))
                        if append(p):
                            open_rec = None
                            break
                continue
            r = it
            if r.cont:
                if not r.format and (open_rec is None or r.ends_line):
                    open_rec = None   # printk(KERN_CONT "\n") only ends the line
                    continue
                if open_rec is not None and open_rec.function == r.function:
                    if append(r):
                        open_rec = None
                    continue
                out.append(r)
                continue
            out.append(r)
            open_rec = r if not r.ends_line else None
        return [r for r in out if id(r) not in consumed]


def substitute(expr: str, bind: dict[str, str]) -> str:
    def rep(m):
        return bind.get(m.group(), m.group())
    # Only rewrite identifiers that start an expression path (sb->s_id: sb), not members.
    return re.sub(r"(?<![\w.>])[A-Za-z_]\w*", rep, expr)


def family_specs() -> list[tuple[str, str, set[str] | None]]:
    out = []
    for fam, specs in FAMILIES:
        for s in specs:
            path, _, funcs = s.partition("::")
            out.append((fam, path, set(funcs.split(",")) if funcs else None))
    return out


def extract_tree(root: str) -> tuple[dict[str, list[dict]], dict[str, int], list[str]]:
    tree = Tree(root)
    # Parse context headers first, so their string macros are known.
    for pat in CONTEXT_FILES + [p for p in tar_patterns() if p.endswith("*.h")]:
        for rel in tree.glob(pat) if "*" in pat else [pat]:
            tree.get(rel)
    ex = Extractor(tree)
    by_family: dict[str, list[dict]] = {}
    debug_counts: dict[str, int] = {}
    taken: dict[str, set[str] | None] = {}   # file -> functions already given to a family
    specs = family_specs()
    for fam, pattern, funcs in specs:
        files = tree.glob(pattern) if "*" in pattern else [pattern]
        for rel in files:
            if tree.get(rel) is None:
                continue
            before = ex.skipped_debug
            recs = ex.extract_file(rel, funcs)
            if fam == "user-text-carriers":
                # panic() prints `Kernel panic - not syncing: ...`, a head of its own.
                panics = [r for r in recs if r.macro in ("panic", "nmi_panic")]
                recs = [r for r in recs if r.macro not in ("panic", "nmi_panic")]
                by_family.setdefault("oops", []).extend(r.to_json() for r in panics)
            if funcs is None and rel in taken:
                # The rest of a file whose named functions went to an earlier family.
                recs = [r for r in recs if r.function not in (taken[rel] or set())]
            elif funcs is None:
                # A later function-filtered spec must not take these again.
                pass
            if funcs is not None:
                taken.setdefault(rel, set())
                taken[rel] |= funcs
            debug_counts[fam] = debug_counts.get(fam, 0) + ex.skipped_debug - before
            by_family.setdefault(fam, []).extend(r.to_json() for r in recs)
    for fam in by_family:
        seen = set()
        uniq = []
        for r in sorted(by_family[fam], key=lambda r: (r["file"], r["line"])):
            k = (r["file"], r["line"], r["format"])
            if k not in seen:
                seen.add(k)
                uniq.append(r)
        by_family[fam] = uniq
    return by_family, debug_counts, ex.unresolved


def main(argv: list[str]) -> int:
    if argv[1:] == ["--tar-patterns"]:
        print("\n".join(tar_patterns()))
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, out_dir = argv[1], argv[2]
    if not os.path.isdir(os.path.join(root, "kernel")):
        print(f"{root}: not a kernel source tree (no kernel/ directory); unpack "
              "linux-source-X.Y first (see refresh.sh)", file=sys.stderr)
        return 1
    by_family, debug_counts, unresolved = extract_tree(root)
    os.makedirs(out_dir, exist_ok=True)
    for old in os.listdir(out_dir):
        if old.endswith(".jsonl"):
            os.remove(os.path.join(out_dir, old))
    for fam, recs in sorted(by_family.items()):
        with open(os.path.join(out_dir, fam + ".jsonl"), "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n")
    print(f"{'family':<20} {'formats':>8} {'debug-only (not extracted)':>28}")
    for fam, _ in FAMILIES:
        print(f"{fam:<20} {len(by_family.get(fam, [])):>8} {debug_counts.get(fam, 0):>28}")
    if unresolved:
        print(f"{len(unresolved)} calls with a format this tool cannot resolve "
              "(not a literal), e.g.:", file=sys.stderr)
        for u in unresolved[:15]:
            print("  " + u, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
