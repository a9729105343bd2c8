#!/usr/bin/env bash
# Make a development certificate authority, a SuperLink TLS certificate signed by it,
# and SuperNode authentication key pairs, for a Flower federation.
#
#   scripts/make_certs.sh [-o DIR] [-n NUM_SUPERNODES] [-H HOST]... [-f]
#
#   -o DIR  output folder (default: .federation/certs); keep it out of version control
#   -n N    SuperNode key pairs to make: DIR/supernode-<i> (private), .pub (public);
#           default 2. On real machines make each SuperNode's key pair on that machine
#           instead and copy only its .pub file to whoever registers it.
#   -H HOST extra name or IP address SuperNodes use to reach the SuperLink (repeatable);
#           localhost, 127.0.0.1 and ::1 are always in the certificate
#   -f      replace an existing CA and SuperLink certificate (SuperNodes must then get
#           the new ca.crt); existing SuperNode keys are always kept
#
# Files: ca.crt (give to every SuperNode and to the `flwr` CLI), ca.key (keep on one
# machine, it signs certificates), superlink.crt and superlink.key (SuperLink only).
# Development only: the CA has no revocation and its key is unencrypted on disk.
set -euo pipefail

out=".federation/certs"
num_supernodes=2
force=0
hosts=()
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
while getopts "o:n:H:fh" opt; do
    case "$opt" in
        o) out="$OPTARG" ;;
        n) num_supernodes="$OPTARG" ;;
        H) hosts+=("$OPTARG") ;;
        f) force=1 ;;
        h) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ "$num_supernodes" =~ ^[0-9]+$ ]] || { echo "-n needs a number, got $num_supernodes" >&2; exit 2; }

mkdir -p "$out"
# Private keys are owner-only; the public files are made readable further down.
umask 077
days=365

if [[ -f "$out/ca.crt" && "$force" -eq 0 ]]; then
    echo "Keeping the existing CA and SuperLink certificate in $out (-f replaces them)"
else
    openssl req -x509 -new -nodes -days "$days" -sha256 \
        -newkey ec -pkeyopt ec_paramgen_curve:P-384 \
        -keyout "$out/ca.key" -out "$out/ca.crt" \
        -subj "/CN=FedHyper development CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

    san="DNS:localhost,IP:127.0.0.1,IP:::1"
    for host in "${hosts[@]}"; do
        if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then
            san+=",IP:$host"
        else
            san+=",DNS:$host"
        fi
    done
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-384 \
        -keyout "$out/superlink.key" -out "$out/superlink.csr" \
        -subj "/CN=fedhyper-superlink" 2>/dev/null
    openssl x509 -req -in "$out/superlink.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
        -CAcreateserial -days "$days" -sha256 -out "$out/superlink.crt" \
        -extfile <(printf '%s\n' \
            "subjectAltName=$san" \
            "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyAgreement" \
            "extendedKeyUsage=serverAuth") 2>/dev/null
    rm -f "$out/superlink.csr" "$out/ca.srl"
    echo "Made $out/ca.crt and $out/superlink.crt (subjectAltName: $san)"
fi
chmod 644 "$out/ca.crt" "$out/superlink.crt"

for ((i = 0; i < num_supernodes; i++)); do
    key="$out/supernode-$i"
    if [[ ! -f "$key" ]]; then
        # Flower 1.42 SuperNode authentication: an OpenSSH-format key on a NIST curve.
        ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedhyper-supernode-$i" -f "$key"
        chmod 644 "$key.pub"
        echo "Made SuperNode key pair $key{,.pub}"
    fi
done
