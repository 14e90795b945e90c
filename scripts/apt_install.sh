#!/bin/sh
# Installs the Debian packages named on the command line, if any: with apt-get when run as
# root, otherwise by printing the exact command to run and failing, so `make` stops here.
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "ember: installing $* with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
else
    echo "ember: missing Debian packages: $*"
    echo "install them with:"
    echo "    sudo apt-get install -y $*"
    exit 1
fi
