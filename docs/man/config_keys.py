#!/usr/bin/env python3
"""Turn configs/local.toml (the reference that sets every key, each with its
comment) into the scdoc KEYS section of fluidmemd.toml(5), so the man page
cannot drift from the configuration. Usage: config_keys.py IN.scd.in local.toml OUT.scd"""
import re
import sys


def esc(text):
    # scdoc formats *bold* and _underline_; a literal one is escaped.
    return re.sub(r'([*_\\])', r'\\\1', text)


def keys(path):
    out, comment, table = [], [], None
    started = False
    for line in open(path, encoding='utf-8'):
        line = line.rstrip('\n')
        s = line.strip()
        m = re.match(r'^\[([a-z0-9_.]+)\]$', s)
        if m:
            started, table, comment = True, m.group(1), []
            out.append('## [%s]\n' % table)
            continue
        if not started:
            continue
        if not s:
            comment = []
        elif s.startswith('#'):
            comment.append(s[1:].strip())
        else:
            m = re.match(r'^([a-z0-9_]+)\s*=\s*(.*)$', s)
            if not m:
                sys.exit('%s: cannot read line: %s' % (path, line))
            out.append('*%s.%s* = %s\n' % (esc(table), esc(m.group(1)), esc(m.group(2))))
            text = ' '.join(comment) if comment else 'See the key above.'
            out.append('\t%s\n' % esc(text))
            comment = []
    return '\n'.join(out)


def main():
    src, toml, dst = sys.argv[1:4]
    text = open(src, encoding='utf-8').read()
    if '@CONFIG_KEYS@' not in text:
        sys.exit('%s: no @CONFIG_KEYS@' % src)
    open(dst, 'w', encoding='utf-8').write(text.replace('@CONFIG_KEYS@', keys(toml)))


main()
