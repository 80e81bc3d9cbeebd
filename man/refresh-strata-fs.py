#!/usr/bin/env python3
"""Rewrite the OPTIONS and MOUNT OPTIONS sections of man/strata-fs.1.scd
from the tables in fs/opts.c (flag_table and opts_table), which also feed
strata-fs's parser and its --help; the rest of the page is hand-written.

usage: python3 man/refresh-strata-fs.py [--check]
With --check nothing is written: exit 1 when the page differs from the
tables (tests/docs/test_manpages.py runs that check)."""
import os
import re
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
PAGE = os.path.join(HERE, 'strata-fs.1.scd')
OPTS_C = os.path.join(HERE, '..', 'fs', 'opts.c')

C_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def c_fields(row):
    """The comma-separated fields of one initializer row; adjacent string
    literals are joined, as the compiler joins them."""
    fields, cur, i = [], [], 0
    while i < len(row):
        c = row[i]
        if c == '"':
            m = C_STRING.match(row, i)
            cur.append(('s', bytes(m.group(1), 'utf-8').decode('unicode_escape')))
            i = m.end()
        elif c == ',':
            fields.append(cur)
            cur = []
            i += 1
        elif c.isalnum() or c == '_':
            m = re.compile(r'\w+').match(row, i)
            cur.append(('id', m.group(0)))
            i = m.end()
        else:
            i += 1
    if cur:
        fields.append(cur)
    out = []
    for f in fields:
        if f and all(k == 's' for k, _ in f):
            out.append(''.join(v for _, v in f))
        elif f:
            out.append(f[0][1])
    return out


def table(src, name):
    """The rows of the C array NAME[] in src, each a list of fields."""
    m = re.search(r'\b%s\[\]\s*=\s*\{' % name, src)
    if not m:
        sys.exit('refresh-strata-fs.py: no table %s in fs/opts.c' % name)
    body, depth, i = [], 1, m.end()
    rows, start = [], None
    while depth:
        c = src[i]
        if c == '"':
            i = C_STRING.match(src, i).end()
            continue
        if c == '{':
            depth += 1
            if depth == 2:
                start = i + 1
        elif c == '}':
            depth -= 1
            if depth == 1:
                rows.append(c_fields(src[start:i]))
        i += 1
    return [r for r in rows if r and r[0] != 'NULL']


def esc(t):
    return t.replace('\\', '\\\\').replace('*', '\\*').replace('_', '\\_')


def mark_item(item):
    """One spelling of a synopsis in scdoc: the name in bold, placeholders
    (upper-case words) underlined."""
    if '=' not in item or not re.search(r'[A-Z]', item.split('=', 1)[1]):
        return '*%s*' % esc(item) if item != '...' else item
    name, value = item.split('=', 1)
    value = re.sub(r'[A-Z][A-Z0-9]*', lambda m: '_%s_' % m.group(0), value.replace('_', '\\_'))
    return '*%s=*%s' % (esc(name), value)


def paragraph(text):
    return '\n'.join('\t' + l for l in textwrap.wrap(esc(text), 72, break_on_hyphens=False))


def sentence(text):
    text = text[0].upper() + text[1:]
    return text if text.endswith('.') else text + '.'


def generate(src):
    flags = []
    for spelling, _set, help_ in table(src, 'flag_table'):
        flags.append('%s\n%s\n' % (', '.join('*%s*' % esc(s) for s in spelling.split(', ')),
                                   paragraph(sentence(help_))))
    opts = []
    for _names, _kind, _parse, synopsis, help_ in table(src, 'opts_table'):
        opts.append('%s\n%s\n' % (', '.join(mark_item(s) for s in synopsis.split(', ')), paragraph(help_)))
    return '\n'.join(flags), '\n'.join(opts)


def section(page, title):
    """(start, end) of the body of '# TITLE' up to the next heading."""
    m = re.search(r'^# %s\n\n' % re.escape(title), page, re.M)
    if not m:
        sys.exit('refresh-strata-fs.py: no section %s in %s' % (title, PAGE))
    n = re.compile(r'^# ', re.M).search(page, m.end())
    return m.end(), n.start() if n else len(page)


def refreshed(page, src):
    flags, opts = generate(src)
    s, e = section(page, 'OPTIONS')
    page = page[:s] + flags + '\n' + page[e:]
    s, e = section(page, 'MOUNT OPTIONS')
    # the section's first paragraph is hand-written; the entries follow it
    intro = page[s:e].split('\n\n', 1)[0]
    return page[:s] + intro + '\n\n' + opts + '\n' + page[e:]


def main(argv):
    page = open(PAGE).read()
    new = refreshed(page, open(OPTS_C).read())
    if '--check' in argv:
        if new != page:
            print('man/strata-fs.1.scd: its options differ from fs/opts.c\'s tables; '
                  'run python3 man/refresh-strata-fs.py')
            return 1
        return 0
    if new != page:
        open(PAGE, 'w').write(new)
        print('rewrote', PAGE)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
