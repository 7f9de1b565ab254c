"""Joint control (docs/joint-control.md): specifications approved by the factory QA and the regulator.

* :mod:`~blackbox.spec.canonical` the canonical JSON bytes that are hashed and signed
* :mod:`~blackbox.spec.approval`  detached two-role Ed25519 approvals (sidecar ``.sig`` files)
* :mod:`~blackbox.spec.model`     the specification file: parameters, rules, materials, retention
* :mod:`~blackbox.spec.diff`      each changed parameter with its old and new value
* :mod:`~blackbox.spec.enforce`   what the agent judges against: only approved specifications
* :mod:`~blackbox.spec.demo`      the demo's two keys and its approved specification
"""
