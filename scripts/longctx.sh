#!/bin/sh
# LongLoRA's context-extension run (examples/longctx.cpp): dumps the King James Bible from
# Debian's bible-kjv-text with the `bible` program (package bible-kjv) into BUILD/data/kjv.txt,
# then trains at context 256, extends to 1024 and prints the perplexity and passkey tables.
# Usage: scripts/longctx.sh BUILD [longctx options...]
set -e
BUILD=${1:-build}
[ $# -gt 0 ] && shift
mkdir -p "$BUILD/data"
if [ ! -s "$BUILD/data/kjv.txt" ]; then
    # Genesis 1:1 to Revelation 22:21, one verse per line (wide lines), "<Book> 1" before each book
    bible -l100000 "Gen1:1-Rev22:21" > "$BUILD/data/kjv.txt.tmp"
    mv "$BUILD/data/kjv.txt.tmp" "$BUILD/data/kjv.txt"
fi
echo "load before: $(uptime)"
"$BUILD/longctx" --data "$BUILD/data/kjv.txt" "$@"
echo "load after: $(uptime)"
