# Shell helpers the bench scripts share (source it: `. "$ROOT/bench/lib.sh"`).

# need CMD PACKAGE: installs the Debian package when the command is missing.
need() { command -v "$1" >/dev/null || { sudo -n true 2>/dev/null && S=sudo || S=; DEBIAN_FRONTEND=noninteractive $S apt-get install -y "$2" >/dev/null; }; }
# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_port PORT: waits up to 10 s for 127.0.0.1:PORT to accept.
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }
