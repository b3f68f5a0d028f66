# One image for every promo role: promo ingest, readnode, proxy, standalone.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/promo ./cmd/promo

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/promo /usr/local/bin/promo
USER nonroot
ENTRYPOINT ["promo"]
CMD ["help"]
