// Builds CoreDNS at a pinned release with only the plugins the test cluster's DNS uses
// (cluster.local and the reverse zones from the API server; no forward, so nothing is
// ever asked of the machine's own resolver). CoreDNS documents this way of building a
// server with a chosen plugin set: set dnsserver.Directives, then call coremain.Run.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins in the order CoreDNS's own plugin.cfg chains them.
var directives = []string{"bind", "ready", "health", "errors", "loadbalance", "cache", "kubernetes"}

func init() { dnsserver.Directives = directives }

func main() { coremain.Run() }
