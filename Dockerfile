# chatbatchd, the reference server: a static binary on distroless.
#
#   docker build -t chatbatchd .
#   docker run --rm -p 8080:8080 chatbatchd -demo
#
# .ci/build-like-docker builds the same binary without a container runtime
# (keep its go build line equal to the one below: TestDeployFiles checks).

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# The modules first, so that a source change reuses the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/chatbatchd ./cmd/chatbatchd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chatbatchd /usr/local/bin/chatbatchd
# distroless's nonroot user (65532); its home is writable, for -db sqlite:….
USER 65532:65532
WORKDIR /home/nonroot
# Listen on every interface inside the container (the default is loopback).
ENV CHATBATCHD_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=6s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/chatbatchd", "-healthcheck", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["/usr/local/bin/chatbatchd"]
