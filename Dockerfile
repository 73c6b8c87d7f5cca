# poolgate container image: a static binary on an empty base, run as a
# non-root user.
#
# This file packages a binary built beforehand, so it needs no image
# registry:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o dist/poolgate ./cmd/poolgate
#   podman build -t poolgate .        # or: docker build -t poolgate .
#
# README.md ("Container image") shows the multi-stage variant that builds
# the binary inside a golang image.
FROM scratch
COPY dist/poolgate /usr/local/bin/poolgate
# state_dir (keys, pins) lives on a volume owned by the runtime user.
COPY --chown=65532:65532 deploy/container/state/ /var/lib/poolgate/
USER 65532:65532
VOLUME ["/var/lib/poolgate"]
EXPOSE 2222
ENTRYPOINT ["/usr/local/bin/poolgate"]
CMD ["serve", "--config", "/etc/poolgate/poolgate.yaml"]
