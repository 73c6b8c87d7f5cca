// Package azure finds the live instances of an Azure VM scale set and
// cooperates with autoscale. It and gateway/keyvault (the CA key in Key
// Vault) are the packages that import the Azure SDK's service clients.
//
// A [Source] lists the scale set's VMs with their instance view
// (armcompute), takes each live instance's private IP from its network
// interface (armnetwork: one list call for Uniform scale sets, one Get per
// new VM for Flexible ones) and pushes the node set to a
// discovery.NodeSetter, on an interval that respects ARM's throttling: it
// reads the x-ms-ratelimit-remaining-* headers, waits out a 429's
// Retry-After, and keeps the last good node set (marked stale) while ARM
// fails.
//
// Around that loop, each switchable in discovery.AzureConfig:
//   - protect_busy_nodes: instances with sessions, or users within the
//     affinity grace, carry ProtectFromScaleIn (see protect.go);
//   - scale_from_zero: a user who finds no instance running raises the
//     capacity, once for all who wait ([Source.StartNode]);
//   - [Source.ScaleIn] drains and deletes instances idle for a given time.
//
// Usage:
//
//	src, err := azure.New(cfg, azure.Options{Pool: bal, Logger: log})
//	if err != nil { ... }                 // names the credential sources tried
//	if err := src.Check(ctx); err != nil { ... } // token and read access, at start
//	go src.Run(ctx, discovery.Fanout{bal, checker})
//
// Tests pass Options.Credential and Options.Transport (the SDK's fakes);
// nothing in them reaches Azure or the instance metadata address.
//
// azure imports discovery and balancer (for their types), never gateway.
package azure
