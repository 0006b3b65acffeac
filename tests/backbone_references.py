"""Reference outputs of registered backbones, computed by an implementation nobody here
wrote (tests/fixtures/README.md): backbone name -> fixture. The contract test
(tests/backbones/test_backbone_contract.py) compares a backbone whose weights are on disk
with its reference, and reports a skip for a backbone that has none."""
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCES = {"efficientnet_lite0": FIXTURES / "effnet" / "reference.npz",
              "efficientnet_lite1": FIXTURES / "effnet" / "reference_lite1.npz",
              "efficientnet_lite2": FIXTURES / "effnet" / "reference_lite2.npz"}
