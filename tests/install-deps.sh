#!/bin/sh
# Installs what keyrite's tests need and a fresh Debian machine lacks, then
# does nothing more: README.md's test command runs it before `cargo test`.
# Run as root (it uses apt-get and pip); it installs only what is missing, so
# a second run is quick and changes nothing.
set -eu

missing=""
need() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need softhsm2-util softhsm2        # the PKCS#11 token every ceremony test uses
need pkcs11-tool opensc            # to look at what keyrite left on a token
need openssl openssl               # to check every certificate, CSR and CRL
need lego lego                     # real ACME clients and servers
need certbot certbot
need caddy caddy
need knotd knot                    # a real DNS server for dns-01 and CAA
need curl curl
need unshare util-linux            # network namespaces for the air-gap tests
need ip iproute2
need tmux tmux                     # drives an interactive ceremony like a person
need fusefat fusefat               # FAT and exFAT USB sticks through FUSE
need mount.exfat-fuse exfat-fuse
need mkfs.fat dosfstools
need mkfs.exfat exfatprogs
need cc gcc                        # builds the fault-injecting PKCS#11 module
[ -f /usr/include/p11-kit-1/p11-kit/pkcs11.h ] || missing="$missing libp11-kit-dev"
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
if [ -n "$missing" ]; then
  echo "installing:$missing"
  apt-get update
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi

# The Python reference implementation of SLIP-0039, to recombine our shares.
python3 -c 'import shamir_mnemonic' >/dev/null 2>&1 || pip install 'shamir-mnemonic==0.3.0'

# certbot from PyPI reads ACME Renewal Information (Debian's does not); a
# virtualenv keeps it apart from the packaged certbot the other tests use.
certbot_ari="$HOME/.cache/keyrite/certbot-ari"
if [ ! -x "$certbot_ari/bin/certbot" ]; then
  python3 -m venv "$certbot_ari"
  "$certbot_ari/bin/pip" install 'certbot==5.1.0'
fi
echo "test dependencies: present"
