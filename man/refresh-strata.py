#!/usr/bin/env python3
"""Rewrite the command sections of man/strata.1.scd from the command
table's help (`strata COMMAND --help`), keeping the hand-written parts
(description, exit status, files, examples) as they are.

usage: python3 man/refresh-strata.py BUILD/tools/strata
tests/docs/test_manpages.py fails when the page misses a flag of --help:
run this, read the diff, commit."""
import os
import re
import subprocess
import sys

GROUPS = [
    ('IMAGES', ['import', 'export', 'images', 'tag', 'rmi', 'history', 'inspect', 'build', 'pull', 'push',
                'login', 'logout', 'save', 'load']),
    ('CONTAINERS', ['create', 'run', 'start', 'stop', 'restart', 'kill', 'wait', 'pause', 'unpause', 'exec',
                    'logs', 'ps', 'top', 'stats', 'port', 'rm']),
    ('CHANGES AND LAYERS', ['diff', 'layers', 'commit', 'pack', 'unpack', 'system']),
    ('OTHER', ['bench', 'help']),
]


def esc(t):
    return t.replace('*', '\\*').replace('_', '\\_')


def main(strata):
    page = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'strata.1.scd')
    src = open(page).read()
    top = subprocess.run([strata, '--help'], capture_output=True, text=True).stdout
    names = re.findall(r'^  ([a-z][a-z-]+) ', top.split('commands:', 1)[1].split('\n\n')[0], re.M)
    missing = set(names) - {n for _, g in GROUPS for n in g}
    if missing:
        sys.exit('refresh-strata.py: put %s into a group of GROUPS' % ', '.join(sorted(missing)))
    out = []
    for title, group in GROUPS:
        out.append('# %s\n' % title)
        for name in group:
            h = subprocess.run([strata, name, '--help'], capture_output=True, text=True).stdout
            if name == 'help':
                args, what = '[COMMAND]', "this text, or a command's options"
            elif name == 'bench':
                args, what = '[ARGS...]', 'run the benchmark harness (bench/run.sh; see its --help)'
            else:
                m = re.match(r'usage: strata \[--store DIR\] %s ?(.*)\n\n(.*)' % re.escape(name), h)
                args, what = m.group(1), m.group(2)
            out.append('*%s* %s\n\t%s\n' % (name, esc(args), esc(what[0].upper() + what[1:]) + '.'))
            opts = h.split('options:', 1)[1] if 'options:' in h else ''
            lines = [l for l in opts.splitlines() if l.strip()]
            if lines:
                out.append('\tOptions:\n')
                out += ['\t- ' + esc(re.sub(r'\s{2,}', '  ', l.strip())) + '\n' for l in lines]
            out.append('')
    start, end = src.index('# IMAGES'), src.index('# EXIT STATUS')
    open(page, 'w').write(src[:start] + '\n'.join(out) + src[end:])


if __name__ == '__main__':
    main(sys.argv[1])
