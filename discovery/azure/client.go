package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"

	"github.com/poolgate/poolgate/discovery"
)

// managementScope is the token scope of Azure Resource Manager.
const managementScope = "https://management.azure.com/.default"

// RoleHelp says which roles poolgate's identity needs, for error messages
// and docs.
const RoleHelp = "poolgate's identity needs, on the scale set's resource group, the Reader role " +
	"to discover instances, and Virtual Machine Contributor for protect_busy_nodes, scale_from_zero " +
	"and scale-in (or a custom role with Microsoft.Compute/virtualMachineScaleSets/read, " +
	"Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read, Microsoft.Network/networkInterfaces/read, " +
	"Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write, Microsoft.Compute/virtualMachineScaleSets/write, " +
	"Microsoft.Compute/virtualMachineScaleSets/start/action, Microsoft.Compute/virtualMachineScaleSets/delete/action " +
	"and Microsoft.Network/virtualNetworks/subnets/join/action)"

// credentialSources describes what the configured credential tries, for
// the message when no token can be had.
func credentialSources(cfg discovery.AzureConfig) string {
	if cfg.Credential == discovery.CredentialDefault {
		return "DefaultAzureCredential (environment variables AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET or certificate, " +
			"workload identity, managed identity, Azure CLI, Azure Developer CLI)"
	}
	if cfg.ClientID != "" {
		return "the VM's user-assigned managed identity with client ID " + cfg.ClientID
	}
	return "the VM's system-assigned managed identity"
}

// newCredential builds the configured credential. Building one contacts
// nothing; the first GetToken does.
func newCredential(cfg discovery.AzureConfig) (azcore.TokenCredential, error) {
	if cfg.Credential == discovery.CredentialDefault {
		return azidentity.NewDefaultAzureCredential(nil)
	}
	var opts azidentity.ManagedIdentityCredentialOptions
	if cfg.ClientID != "" {
		opts.ID = azidentity.ClientID(cfg.ClientID)
	}
	return azidentity.NewManagedIdentityCredential(&opts)
}

// clients are the SDK clients one Source uses.
type clients struct {
	vms  *armcompute.VirtualMachineScaleSetVMsClient
	sets *armcompute.VirtualMachineScaleSetsClient
	nics *armnetwork.InterfacesClient
}

func newClients(subscription string, cred azcore.TokenCredential, o *arm.ClientOptions) (clients, error) {
	var c clients
	var err error
	if c.vms, err = armcompute.NewVirtualMachineScaleSetVMsClient(subscription, cred, o); err != nil {
		return c, err
	}
	if c.sets, err = armcompute.NewVirtualMachineScaleSetsClient(subscription, cred, o); err != nil {
		return c, err
	}
	c.nics, err = armnetwork.NewInterfacesClient(subscription, cred, o)
	return c, err
}

// clientOptions sets up the SDK pipeline: the transport (tests: the SDK's
// fakes), retries of transient failures but not of 429 (the poll loop
// waits out Retry-After itself rather than blocking in the SDK), and the
// policy that reads ARM's remaining-quota headers.
func clientOptions(transport policy.Transporter, retry *policy.RetryOptions, limits *rateLimits) *arm.ClientOptions {
	o := &arm.ClientOptions{}
	o.Transport = transport
	o.Retry = policy.RetryOptions{StatusCodes: []int{http.StatusRequestTimeout, 500, 502, 503, 504}}
	if retry != nil {
		o.Retry = *retry
	}
	o.Telemetry.ApplicationID = "poolgate"
	o.PerRetryPolicies = []policy.Policy{limits}
	return o
}

// checkToken gets one ARM token, so that a missing identity is reported at
// start with what was tried and what is needed.
func checkToken(ctx context.Context, cfg discovery.AzureConfig, cred azcore.TokenCredential) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{managementScope}}); err != nil {
		return fmt.Errorf("discovery.azure: could not get an Azure token; tried %s: %w\n"+
			"Give the gateway VM a managed identity (or set credential: default and sign in with az login or AZURE_* variables); %s",
			credentialSources(cfg), err, RoleHelp)
	}
	return nil
}

// statusOf returns the HTTP status of an ARM error, 0 if it has none.
func statusOf(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// armError is an ARM failure told in one line, keeping the SDK's error
// (whose text is a multi-line request dump) for errors.As.
type armError struct {
	msg string
	err error
}

func (e *armError) Error() string { return e.msg }
func (e *armError) Unwrap() error { return e.err }

// explain turns an ARM error into a message that says what to do.
func explain(cfg discovery.AzureConfig, what string, err error) error {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var msg string
	switch re.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg = fmt.Sprintf("%s: Azure refused access (%d %s); %s", what, re.StatusCode, re.ErrorCode, RoleHelp)
	case http.StatusNotFound:
		msg = fmt.Sprintf("%s: scale set %q not found in resource group %q of subscription %s (%s)",
			what, cfg.ScaleSet, cfg.ResourceGroup, cfg.SubscriptionID, re.ErrorCode)
	case http.StatusTooManyRequests:
		msg = fmt.Sprintf("%s: throttled by Azure Resource Manager (429 %s)", what, re.ErrorCode)
	default:
		msg = fmt.Sprintf("%s: Azure answered %d %s", what, re.StatusCode, re.ErrorCode)
	}
	return &armError{msg: msg, err: err}
}
