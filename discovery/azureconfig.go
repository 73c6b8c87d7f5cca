package discovery

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// AzureConfig is the YAML section "discovery.azure": an Azure VM scale set
// whose live instances are the pool. The section lives here so that the
// config can be read without the Azure SDK; discovery/azure acts on it.
type AzureConfig struct {
	SubscriptionID string `yaml:"subscription_id"`
	ResourceGroup  string `yaml:"resource_group"`
	ScaleSet       string `yaml:"scale_set"`

	// Credential selects how poolgate signs in to Azure:
	// "managed_identity" (default) uses the VM's managed identity, the
	// user-assigned one named by ClientID when set; "default" uses
	// azidentity's DefaultAzureCredential chain (environment, workload
	// identity, managed identity, Azure CLI, ...).
	Credential string `yaml:"credential"`
	// ClientID is the client ID of a user-assigned managed identity.
	ClientID string `yaml:"client_id"`

	// SSHPort and HTTPPort are the ports of each instance's sshd and
	// JupyterHub. Defaults 22 and 8000.
	SSHPort  int `yaml:"ssh_port"`
	HTTPPort int `yaml:"http_port"`
	// RDPPort is the port of each instance's RDP server, used when the
	// RDP gateway is on (rdp.listen). Default 3389.
	RDPPort int `yaml:"rdp_port"`
	// Weight is every instance's relative capacity. Default 1.
	Weight float64 `yaml:"weight"`

	// Interval between two listings of the scale set. Default 30s. The
	// listing with instance view is one of ARM's costly calls (about 10
	// a minute per scale set), so it may not be under 10s.
	Interval time.Duration `yaml:"interval"`

	// ProtectBusyNodes sets ProtectFromScaleIn on an instance while it has
	// sessions, and clears it once the last one ended and the balancer's
	// affinity_grace passed, so autoscale never removes a VM in use.
	ProtectBusyNodes bool `yaml:"protect_busy_nodes"`

	// ScaleFromZero, when a user arrives and no instance is running, starts
	// stopped instances and raises the capacity, up to MinCapacity, tells
	// the user a node is starting, and routes them once it is up: for
	// every user with true, for users proven before any start (a key, a
	// certificate, an identity sign-in) only with keys_only. With true, a
	// password login, which only a node can check, may start one too, a
	// bounded number of times per start_timeout. Default false.
	ScaleFromZero ScaleFromZero `yaml:"scale_from_zero"`
	// MinCapacity is the capacity that scale_from_zero raises to.
	// Default 1.
	MinCapacity int `yaml:"min_capacity"`
	// StartTimeout bounds how long a user waits for a starting node.
	// Default 10m.
	StartTimeout time.Duration `yaml:"start_timeout"`
}

// ScaleFromZero is discovery.azure.scale_from_zero: false, true or
// keys_only.
type ScaleFromZero string

// The values of ScaleFromZero.
const (
	ScaleFromZeroOff      ScaleFromZero = "false"
	ScaleFromZeroOn       ScaleFromZero = "true"
	ScaleFromZeroKeysOnly ScaleFromZero = "keys_only"
)

// On reports whether a node may be started for anyone (true or
// keys_only).
func (z ScaleFromZero) On() bool { return z == ScaleFromZeroOn || z == ScaleFromZeroKeysOnly }

// ForPasswords reports whether a password login, not proven until a node
// accepts it, may start a node (within the front end's bounds).
func (z ScaleFromZero) ForPasswords() bool { return z == ScaleFromZeroOn }

// Credential kinds.
const (
	CredentialManagedIdentity = "managed_identity"
	CredentialDefault         = "default"
)

// MinAzureInterval is the shortest allowed discovery.azure.interval.
const MinAzureInterval = 10 * time.Second

// WithDefaults fills zero fields with the documented defaults.
func (c AzureConfig) WithDefaults() AzureConfig {
	if c.Credential == "" {
		c.Credential = CredentialManagedIdentity
	}
	if c.SSHPort == 0 {
		c.SSHPort = 22
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = 8000
	}
	if c.RDPPort == 0 {
		c.RDPPort = 3389
	}
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	switch strings.ToLower(string(c.ScaleFromZero)) {
	case "", "false":
		c.ScaleFromZero = ScaleFromZeroOff
	case "true":
		c.ScaleFromZero = ScaleFromZeroOn
	}
	if c.MinCapacity == 0 {
		c.MinCapacity = 1
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 10 * time.Minute
	}
	return c
}

var (
	guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// ARM names: resource groups allow letters, digits, _ - . ( ); scale
	// sets letters, digits, _ - . (never ending in a dot).
	rgRE   = regexp.MustCompile(`^[-\w.()]{1,90}$`)
	vmssRE = regexp.MustCompile(`^[-\w.]{1,64}$`)
)

// Validate reports every bad setting (joined, one error each), naming its key. It expects
// WithDefaults to have run.
func (c AzureConfig) Validate() error {
	var errs []error
	if c.SubscriptionID == "" {
		errs = append(errs, fmt.Errorf("subscription_id: missing (the scale set's subscription ID)"))
	} else if !guidRE.MatchString(c.SubscriptionID) {
		errs = append(errs, fmt.Errorf("subscription_id: %q is not a subscription ID (a GUID such as 00000000-0000-0000-0000-000000000000)", c.SubscriptionID))
	}
	if c.ResourceGroup == "" {
		errs = append(errs, fmt.Errorf("resource_group: missing"))
	} else if !rgRE.MatchString(c.ResourceGroup) || strings.HasSuffix(c.ResourceGroup, ".") {
		errs = append(errs, fmt.Errorf("resource_group: %q is not a resource group name", c.ResourceGroup))
	}
	if c.ScaleSet == "" {
		errs = append(errs, fmt.Errorf("scale_set: missing (the VM scale set's name)"))
	} else if !vmssRE.MatchString(c.ScaleSet) || strings.HasSuffix(c.ScaleSet, ".") {
		errs = append(errs, fmt.Errorf("scale_set: %q is not a scale set name", c.ScaleSet))
	}
	if c.Credential != CredentialManagedIdentity && c.Credential != CredentialDefault {
		errs = append(errs, fmt.Errorf("credential: %q is not one of %s, %s", c.Credential, CredentialManagedIdentity, CredentialDefault))
	}
	if c.ClientID != "" && !guidRE.MatchString(c.ClientID) {
		errs = append(errs, fmt.Errorf("client_id: %q is not a managed identity's client ID (a GUID)", c.ClientID))
	} else if c.ClientID != "" && c.Credential != CredentialManagedIdentity {
		errs = append(errs, fmt.Errorf("client_id: only used with credential: %s", CredentialManagedIdentity))
	}
	if c.SSHPort < 1 || c.SSHPort > 65535 {
		errs = append(errs, fmt.Errorf("ssh_port: must be from 1 to 65535, got %d", c.SSHPort))
	}
	if c.HTTPPort < 1 || c.HTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("http_port: must be from 1 to 65535, got %d", c.HTTPPort))
	}
	if c.RDPPort < 1 || c.RDPPort > 65535 {
		errs = append(errs, fmt.Errorf("rdp_port: must be from 1 to 65535, got %d", c.RDPPort))
	}
	if c.Weight < 0 {
		errs = append(errs, fmt.Errorf("weight: must not be negative, got %v", c.Weight))
	}
	if c.Interval < MinAzureInterval {
		errs = append(errs, fmt.Errorf("interval: %s is too short: listing a scale set with instance view is limited to about 10 calls a minute; use %s or more", c.Interval, MinAzureInterval))
	}
	if c.ScaleFromZero != ScaleFromZeroOff && c.ScaleFromZero != ScaleFromZeroOn && c.ScaleFromZero != ScaleFromZeroKeysOnly {
		errs = append(errs, fmt.Errorf("scale_from_zero: %q is not one of false, true, keys_only", c.ScaleFromZero))
	}
	if c.MinCapacity < 1 {
		errs = append(errs, fmt.Errorf("min_capacity: must be 1 or more, got %d", c.MinCapacity))
	}
	if c.StartTimeout < time.Minute {
		errs = append(errs, fmt.Errorf("start_timeout: %s is too short for a VM to start; use 1m or more", c.StartTimeout))
	}
	return errors.Join(errs...)
}
