"""What lives at the container boundary (installed as ``capgate.container_shim``).

* ``build``: ``capgate image build`` — the default local image, imported from a tar stream
  without any registry (``build_image(runtime) -> image name``);
* ``rootfs``: what that image holds (this host's Python, capgate and its dependencies at the
  same paths as here, the shim, a few tools);
* ``entrypoint``: the first program in every capgate container (stdlib only; copied into the
  image at ``/opt/capgate/shim``): wires the audit FIFO and the egress forwarder, applies the
  Landlock plan, execs the agent with ``AGENT_IN_SANDBOX=1`` and the gate's boot directory;
* ``Containerfile``: the same image for machines that have a registry and a base image.
"""
