#!/usr/bin/env python3
"""Each man page names every option its program's --help lists.

usage: test_manpages.py MANDIR NAME=PROGRAM...

For strata-fs the -o mount options count too (the names at the start of the
option lines of --help), and the page's OPTIONS and MOUNT OPTIONS sections
must be what man/refresh-strata-fs.py makes of fs/opts.c's tables; for strata, every command of the table and every
flag of each command's own --help. An option missing from the page fails
the test with its name, so a new flag cannot land without its
documentation. Exit status: 0 pass, 1 fail, 77 skip (no page built).
"""
import os
import re
import subprocess
import sys

FLAG = re.compile(r'(?<![\w-])(--?[A-Za-z][A-Za-z0-9-]*)')
MOUNT_OPT = re.compile(r'^\s{2}([a-z_]+)(=|\b)', re.M)


def help_text(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return p.stdout + p.stderr


def flags(text):
    """The flags of the option lines (those that begin with '-' after
    their indentation): prose elsewhere may name other programs' flags."""
    out = set()
    lines = [l for l in text.splitlines() if l.lstrip().startswith('-')]
    for f in FLAG.findall('\n'.join(lines)):
        if f in ('-', '--') or re.fullmatch(r'-\d+', f):
            continue
        out.add(f)
    return out


def page_words(page):
    with open(page) as f:
        src = f.read()
    # scdoc escapes: *-f* and \\- are the same words to a reader
    return src.replace('\\', '')


def check(name, prog, mandir, problems):
    page = os.path.join(mandir, name + '.1.scd')
    if not os.path.exists(page):
        problems.append('%s: no man page %s' % (name, page))
        return
    src = page_words(page)
    text = help_text([prog, '--help'])
    want = flags(text)
    if name == 'strata-fs':
        block = text.split('options (-o', 1)[-1].split('\n\n', 1)[0]
        want |= {m.group(1) for m in MOUNT_OPT.finditer(block)}
        # the option sections are made from fs/opts.c's tables, as --help is
        gen = os.path.join(mandir, 'refresh-strata-fs.py')
        p = subprocess.run([sys.executable, gen, '--check'], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            problems.append('strata-fs: %s' % (p.stdout + p.stderr).strip())
    if name == 'strata':
        cmds = re.findall(r'^  ([a-z][a-z-]+)\s', text.split('commands:', 1)[-1], re.M)
        for c in cmds:
            if not re.search(r'\b%s\b' % re.escape(c), src):
                problems.append('strata: command %s is not in %s' % (c, page))
            want |= flags(help_text([prog, c, '--help']))
    for w in sorted(want):
        if w in ('-h', '--help'):
            continue
        if not re.search(r'(?<![\w-])%s(?![\w-])' % re.escape(w), src):
            problems.append('%s: %s (in --help) is not in %s' % (name, w, page))


def main():
    mandir = sys.argv[1]
    problems = []
    for arg in sys.argv[2:]:
        name, prog = arg.split('=', 1)
        check(name, prog, mandir, problems)
    for p in problems:
        print('FAIL', p)
    print('%d passed, %d failed' % (len(sys.argv) - 2 - len({p.split(':')[0] for p in problems}),
                                   len({p.split(':')[0] for p in problems})))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
