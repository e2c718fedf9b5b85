"""The gRPC door's Python client, generated at test time from proto/strom/v1/strom.proto by
grpcio-tools (as a user of Strom would generate it), plus small helpers for the e2e tests."""

import importlib
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_status import rpc_status
from google.rpc import error_details_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"

_generated = None


def generated():
    """(strom_pb2, strom_pb2_grpc), generated once per test session."""
    global _generated
    if _generated is None:
        from grpc_tools import protoc

        out = Path(tempfile.mkdtemp(prefix="strom-grpc-py-"))
        args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}",
                str(PROTO_DIR / "strom" / "v1" / "strom.proto")]
        assert protoc.main(args) == 0, "grpcio-tools could not compile strom.proto"
        for d in (out / "strom", out / "strom" / "v1"):
            (d / "__init__.py").touch()
        sys.path.insert(0, str(out))
        pb2 = importlib.import_module("strom.v1.strom_pb2")
        pb2_grpc = importlib.import_module("strom.v1.strom_pb2_grpc")
        _generated = (pb2, pb2_grpc)
    return _generated


def stub(address, **kw):
    _, pb2_grpc = generated()
    channel = grpc.insecure_channel(address, **kw)
    return channel, pb2_grpc.StromStub(channel)


def error_reason(err: grpc.RpcError):
    """The ErrorInfo reason of a refused call (google.rpc.Status details), or None."""
    st = rpc_status.from_call(err)
    if st is None:
        return None
    for d in st.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return info.reason
    return None
