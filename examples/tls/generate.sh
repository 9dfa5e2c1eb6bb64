#!/usr/bin/env bash
# Regenerates the DEMO certificates of examples/https.yaml: a CA, a server
# certificate for localhost, 127.0.0.1 and *.example.test, and a client
# certificate for mTLS. Their keys are public (they are in the repository):
# for trying veer out only, never for anything real.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec ca.key
openssl req -x509 -new -key ca.key -days $days -subj "/CN=veer demo CA (public key, never trust it)" \
    -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem
leaf() { # name subject extensions
    ec "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -extfile <(printf '%s' "$3") -out "$1.pem" 2>/dev/null
    rm -f "$1.csr"
}
leaf server "/CN=localhost" "subjectAltName=DNS:localhost,DNS:*.example.test,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client "/CN=demo-client" "extendedKeyUsage=clientAuth"
rm -f ca.srl ca.key
echo "wrote $(pwd)/{ca,server,client}.pem and the server and client keys"
