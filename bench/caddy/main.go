// Caddy with its standard modules, for `make bench` (bench/run.sh): the peer that, like
// routemeter, proxies and records Prometheus metrics per request. Built from the Go module
// pinned in go.mod into ~/.cache/routemeter/bin/caddy-<version>.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
