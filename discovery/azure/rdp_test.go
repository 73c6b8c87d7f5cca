package azure

import (
	"testing"
	"time"

	"github.com/poolgate/poolgate/balancer"
	"github.com/poolgate/poolgate/discovery"
	"github.com/poolgate/poolgate/discovery/azure/azuretest"
)

func TestRDPAddressOnlyWithTheRDPGateway(t *testing.T) {
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "win0", IP: "10.0.1.4"})
	f := newFixture(t, w, fixtureOpts{cfg: func(c *discovery.AzureConfig) { c.RDPPort = 3390 }})
	f.poll()
	if n := f.rec.nodes[0]; n.RDP != "" {
		t.Fatalf("RDP gateway off: node %+v, want no RDP address", n)
	}
	f.src.rdp = true
	f.poll()
	if n := f.rec.nodes[0]; n.RDP != "10.0.1.4:3390" || n.SSH != "10.0.1.4:22" {
		t.Fatalf("RDP gateway on: node %+v, want the private IP with rdp_port", n)
	}
	if c := (discovery.AzureConfig{}).WithDefaults(); c.RDPPort != 3389 {
		t.Fatalf("default rdp_port %d", c.RDPPort)
	}
}

func TestRDPSessionKeepsProtection(t *testing.T) {
	// alice's RDP session lives on n0 while her pin moved to n1 (her
	// SSH session there): n0 carries a session and stays protected.
	w := azuretest.New()
	w.Add(azuretest.VM{ID: "0", Name: "n0", IP: "10.0.0.4"}, azuretest.VM{ID: "1", Name: "n1", IP: "10.0.0.5"})
	grace := 10 * time.Minute
	f := newFixture(t, w, fixtureOpts{cfg: protecting, withPool: true, grace: grace})
	f.src.rdp = true
	f.poll()
	for _, n := range f.rec.nodes {
		f.bal.SetHealth(n.Name, balancer.RDP, true, "ok")
	}
	rdp, err := f.bal.AcquireOn("alice", balancer.RDP, "c", "n0", balancer.ByBalancer)
	if err != nil {
		t.Fatal(err)
	}
	defer rdp.Release()
	if _, err := f.bal.AcquireOn("alice", balancer.SSH, "c", "n1", balancer.ByBalancer); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		f.clock.Add(grace)
		f.poll()
		f.settle()
	}
	if vm, _ := w.VM("0"); !vm.Protected {
		t.Fatalf("n0, with alice's RDP session, is not protected (updates %s)", updates(w))
	}
}
