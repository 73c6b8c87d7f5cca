package azuretest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	computefake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"
	networkfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9/fake"
)

// Call kinds, for counting and for injecting failures.
const (
	List     = "list"     // VMSS VMs list (with instance view)
	Get      = "get"      // scale set Get
	Capacity = "capacity" // scale set update (capacity)
	Protect  = "protect"  // VMSS VM update (protection)
	Delete   = "delete"   // scale set delete instances
	Start    = "start"    // scale set start instances
	NICs     = "nics"     // scale set NIC list (Uniform)
	NIC      = "nic"      // one NIC Get (Flexible)
)

var apiKinds = map[string]string{
	"VirtualMachineScaleSetVMsClient.NewListPager":                         List,
	"VirtualMachineScaleSetsClient.Get":                                    Get,
	"VirtualMachineScaleSetsClient.BeginUpdate":                            Capacity,
	"VirtualMachineScaleSetVMsClient.BeginUpdate":                          Protect,
	"VirtualMachineScaleSetsClient.BeginDeleteInstances":                   Delete,
	"InterfacesClient.NewListVirtualMachineScaleSetNetworkInterfacesPager": NICs,
	"InterfacesClient.Get":                                                 NIC,
}

// VM is one instance of the scale set.
type VM struct {
	ID   string // instance ID ("0", "1", ... for Uniform; the VM name for Flexible)
	Name string // computer name
	IP   string // private IP of its NIC
	// Provisioning ("Succeeded", "Creating", "Failed") and Power
	// ("running", "deallocated", "starting", "stopped").
	Provisioning, Power string
	Protected           bool
}

// ProtectionUpdate is one protection update as the world received it.
type ProtectionUpdate struct {
	ID string
	On bool
	// OnlyProtection: the body held nothing but the protection policy.
	OnlyProtection bool
}

// failure is an injected answer for the next calls of one kind.
type failure struct {
	status int
	header http.Header
	times  int
}

// World is the fake scale set. Its zero value is not usable: call New.
type World struct {
	Subscription, ResourceGroup, ScaleSet string
	Flexible                              bool
	// PageSize splits the VM listing into pages of this many; 0: one page.
	PageSize int
	// OnCapacity runs (without the world's lock) after a capacity update,
	// e.g. to add the VMs that Azure would create.
	OnCapacity func(capacity int64)

	mu       sync.Mutex // protects everything below
	vms      []*VM
	capacity int64
	calls    map[string]int
	updates  []ProtectionUpdate
	raises   []int64
	deleted  [][]string
	started  [][]string
	fail     map[string]*failure
	header   http.Header // added to every answer
}

// New returns an empty Uniform scale set "pool" in resource group "rg".
func New() *World {
	return &World{
		Subscription: "00000000-0000-0000-0000-000000000001", ResourceGroup: "rg", ScaleSet: "pool",
		calls: map[string]int{}, fail: map[string]*failure{}, header: http.Header{},
	}
}

// Add adds VMs (running and provisioned unless they say otherwise) and
// counts them in the capacity.
func (w *World) Add(vms ...VM) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, vm := range vms {
		vm := vm
		if vm.Provisioning == "" {
			vm.Provisioning = "Succeeded"
		}
		if vm.Power == "" {
			vm.Power = "running"
		}
		w.vms = append(w.vms, &vm)
		w.capacity++
	}
}

// Remove deletes the VM with the given instance ID.
func (w *World) Remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.removeLocked(id)
}

func (w *World) removeLocked(id string) {
	for i, vm := range w.vms {
		if vm.ID == id {
			w.vms = append(w.vms[:i], w.vms[i+1:]...)
			w.capacity--
			return
		}
	}
}

// Set changes a VM in place.
func (w *World) Set(id string, change func(*VM)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, vm := range w.vms {
		if vm.ID == id {
			change(vm)
		}
	}
}

// VM returns a copy of the VM with the given instance ID.
func (w *World) VM(id string) (VM, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, vm := range w.vms {
		if vm.ID == id {
			return *vm, true
		}
	}
	return VM{}, false
}

// Capacity is the scale set's SKU capacity.
func (w *World) Capacity() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.capacity
}

// SetCapacity sets the capacity without adding VMs.
func (w *World) SetCapacity(n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.capacity = n
}

// Calls counts the calls of one kind that reached the world (failed ones
// included).
func (w *World) Calls(kind string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[kind]
}

// ProtectionUpdates returns the protection updates received, in order.
func (w *World) ProtectionUpdates() []ProtectionUpdate {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ProtectionUpdate(nil), w.updates...)
}

// CapacityRaises returns the capacities asked for, in order.
func (w *World) CapacityRaises() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int64(nil), w.raises...)
}

// Deleted returns the instance IDs of each delete call, in order.
func (w *World) Deleted() [][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]string(nil), w.deleted...)
}

// Started returns the instance IDs of each start call, in order.
func (w *World) Started() [][]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]string(nil), w.started...)
}

// Fail answers the next times calls of kind with status (and header, such
// as Retry-After) instead of serving them.
func (w *World) Fail(kind string, status int, header http.Header, times int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fail[kind] = &failure{status: status, header: header, times: times}
}

// SetHeader adds a header to every answer, such as
// x-ms-ratelimit-remaining-resource; an empty value removes it.
func (w *World) SetHeader(name, value string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if value == "" {
		w.header.Del(name)
		return
	}
	w.header.Set(name, value)
}

// Transport is the transport to give the SDK clients
// (arm.ClientOptions.Transport).
func (w *World) Transport() policy.Transporter {
	return &transport{w: w, compute: computefake.NewServerFactoryTransport(w.computeServers()), network: networkfake.NewServerFactoryTransport(w.networkServers())}
}

// Credential is a token credential that always succeeds without any
// network (the SDK's fake).
func Credential() *azfake.TokenCredential { return &azfake.TokenCredential{} }

// NoRetry turns the SDK's own retries off, so that a test sees each
// injected failure once.
func NoRetry() *policy.RetryOptions { return &policy.RetryOptions{MaxRetries: -1} }

type transport struct {
	w       *World
	compute policy.Transporter
	network policy.Transporter
}

func (t *transport) Do(req *http.Request) (*http.Response, error) {
	api, _ := req.Context().Value(azruntime.CtxAPINameKey{}).(string)
	kind := apiKinds[api]
	w := t.w
	w.mu.Lock()
	w.calls[kind]++
	var fail *failure
	if f := w.fail[kind]; f != nil && f.times > 0 {
		f.times--
		fail = f
	}
	extra := w.header.Clone()
	w.mu.Unlock()
	if fail != nil {
		return errorResponse(req, fail.status, fail.header), nil
	}
	next := t.compute
	if strings.Contains(req.URL.Path, "/Microsoft.Network/") || strings.HasPrefix(kind, "nic") {
		next = t.network
	}
	resp, err := next.Do(req)
	if resp != nil {
		for k, v := range extra {
			resp.Header[k] = v
		}
	}
	return resp, err
}

func errorResponse(req *http.Request, status int, header http.Header) *http.Response {
	code := map[int]string{429: "TooManyRequests", 500: "InternalServerError", 403: "AuthorizationFailed", 404: "ResourceNotFound"}[status]
	if code == "" {
		code = "Error" + strconv.Itoa(status)
	}
	body := fmt.Sprintf(`{"error":{"code":%q,"message":"injected by azuretest"}}`, code)
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "application/json")
	h.Set("x-ms-error-code", code)
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: req, ContentLength: int64(len(body)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
}

// resource IDs

func (w *World) setID() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s", w.Subscription, w.ResourceGroup, w.ScaleSet)
}

func (w *World) vmID(vm *VM) string {
	if w.Flexible {
		return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", w.Subscription, w.ResourceGroup, vm.ID)
	}
	return w.setID() + "/virtualMachines/" + vm.ID
}

func (w *World) nicID(vm *VM) string {
	if w.Flexible {
		return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Network/networkInterfaces/%s-nic", w.Subscription, w.ResourceGroup, vm.ID)
	}
	return w.vmID(vm) + "/networkInterfaces/nic0"
}

func (w *World) vmModel(vm *VM) *armcompute.VirtualMachineScaleSetVM {
	statuses := []*armcompute.InstanceViewStatus{{Code: to.Ptr("ProvisioningState/" + strings.ToLower(vm.Provisioning))}}
	if vm.Power != "" {
		statuses = append(statuses, &armcompute.InstanceViewStatus{Code: to.Ptr("PowerState/" + vm.Power)})
	}
	name := w.ScaleSet + "_" + vm.ID
	if w.Flexible {
		name = vm.ID
	}
	return &armcompute.VirtualMachineScaleSetVM{
		ID: to.Ptr(w.vmID(vm)), InstanceID: to.Ptr(vm.ID), Name: to.Ptr(name),
		Properties: &armcompute.VirtualMachineScaleSetVMProperties{
			ProvisioningState: to.Ptr(vm.Provisioning),
			OSProfile:         &armcompute.OSProfile{ComputerName: to.Ptr(vm.Name)},
			InstanceView:      &armcompute.VirtualMachineScaleSetVMInstanceView{ComputerName: to.Ptr(vm.Name), Statuses: statuses},
			ProtectionPolicy:  &armcompute.VirtualMachineScaleSetVMProtectionPolicy{ProtectFromScaleIn: to.Ptr(vm.Protected)},
			NetworkProfile: &armcompute.NetworkProfile{NetworkInterfaces: []*armcompute.NetworkInterfaceReference{
				{ID: to.Ptr(w.nicID(vm)), Properties: &armcompute.NetworkInterfaceReferenceProperties{Primary: to.Ptr(true)}},
			}},
		},
	}
}

func (w *World) nicModel(vm *VM) *armnetwork.Interface {
	return &armnetwork.Interface{
		ID: to.Ptr(w.nicID(vm)),
		Properties: &armnetwork.InterfacePropertiesFormat{
			Primary:        to.Ptr(true),
			VirtualMachine: &armnetwork.SubResource{ID: to.Ptr(w.vmID(vm))},
			IPConfigurations: []*armnetwork.InterfaceIPConfiguration{{
				Properties: &armnetwork.InterfaceIPConfigurationPropertiesFormat{Primary: to.Ptr(true), PrivateIPAddress: to.Ptr(vm.IP)},
			}},
		},
	}
}

func (w *World) computeServers() *computefake.ServerFactory {
	return &computefake.ServerFactory{
		VirtualMachineScaleSetVMsServer: computefake.VirtualMachineScaleSetVMsServer{
			NewListPager: func(rg, set string, _ *armcompute.VirtualMachineScaleSetVMsClientListOptions) (resp azfake.PagerResponder[armcompute.VirtualMachineScaleSetVMsClientListResponse]) {
				w.mu.Lock()
				defer w.mu.Unlock()
				var page []*armcompute.VirtualMachineScaleSetVM
				flush := func() {
					resp.AddPage(http.StatusOK, armcompute.VirtualMachineScaleSetVMsClientListResponse{
						VirtualMachineScaleSetVMListResult: armcompute.VirtualMachineScaleSetVMListResult{Value: page},
					}, nil)
					page = nil
				}
				for _, vm := range w.vms {
					page = append(page, w.vmModel(vm))
					if w.PageSize > 0 && len(page) == w.PageSize {
						flush()
					}
				}
				if len(page) > 0 || len(w.vms) == 0 {
					flush()
				}
				return
			},
			BeginUpdate: func(_ context.Context, rg, set, id string, body armcompute.VirtualMachineScaleSetVM, _ *armcompute.VirtualMachineScaleSetVMsClientBeginUpdateOptions) (resp azfake.PollerResponder[armcompute.VirtualMachineScaleSetVMsClientUpdateResponse], errResp azfake.ErrorResponder) {
				w.mu.Lock()
				defer w.mu.Unlock()
				var vm *VM
				for _, v := range w.vms {
					if v.ID == id {
						vm = v
					}
				}
				if vm == nil {
					errResp.SetResponseError(http.StatusNotFound, "NotFound")
					return
				}
				on := body.Properties != nil && body.Properties.ProtectionPolicy != nil && body.Properties.ProtectionPolicy.ProtectFromScaleIn != nil && *body.Properties.ProtectionPolicy.ProtectFromScaleIn
				only := body.Location == nil && body.SKU == nil && body.Tags == nil && body.Plan == nil && body.Identity == nil && body.Properties != nil &&
					*body.Properties == armcompute.VirtualMachineScaleSetVMProperties{ProtectionPolicy: body.Properties.ProtectionPolicy}
				w.updates = append(w.updates, ProtectionUpdate{ID: id, On: on, OnlyProtection: only})
				vm.Protected = on
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachineScaleSetVMsClientUpdateResponse{VirtualMachineScaleSetVM: *w.vmModel(vm)}, nil)
				return
			},
		},
		VirtualMachineScaleSetsServer: computefake.VirtualMachineScaleSetsServer{
			Get: func(_ context.Context, rg, set string, _ *armcompute.VirtualMachineScaleSetsClientGetOptions) (resp azfake.Responder[armcompute.VirtualMachineScaleSetsClientGetResponse], errResp azfake.ErrorResponder) {
				w.mu.Lock()
				defer w.mu.Unlock()
				if rg != w.ResourceGroup || set != w.ScaleSet {
					errResp.SetResponseError(http.StatusNotFound, "ResourceNotFound")
					return
				}
				mode := armcompute.OrchestrationModeUniform
				if w.Flexible {
					mode = armcompute.OrchestrationModeFlexible
				}
				resp.SetResponse(http.StatusOK, armcompute.VirtualMachineScaleSetsClientGetResponse{VirtualMachineScaleSet: armcompute.VirtualMachineScaleSet{
					ID: to.Ptr(w.setID()), Name: to.Ptr(w.ScaleSet),
					SKU:        &armcompute.SKU{Name: to.Ptr("Standard_D4s_v5"), Tier: to.Ptr("Standard"), Capacity: to.Ptr(w.capacity)},
					Properties: &armcompute.VirtualMachineScaleSetProperties{OrchestrationMode: &mode},
				}}, nil)
				return
			},
			BeginUpdate: func(_ context.Context, rg, set string, body armcompute.VirtualMachineScaleSetUpdate, _ *armcompute.VirtualMachineScaleSetsClientBeginUpdateOptions) (resp azfake.PollerResponder[armcompute.VirtualMachineScaleSetsClientUpdateResponse], errResp azfake.ErrorResponder) {
				if body.SKU == nil || body.SKU.Capacity == nil {
					errResp.SetResponseError(http.StatusBadRequest, "InvalidParameter")
					return
				}
				n := *body.SKU.Capacity
				w.mu.Lock()
				w.raises = append(w.raises, n)
				w.capacity = n
				hook := w.OnCapacity
				w.mu.Unlock()
				if hook != nil {
					hook(n)
				}
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachineScaleSetsClientUpdateResponse{}, nil)
				return
			},
			BeginStart: func(_ context.Context, rg, set string, opts *armcompute.VirtualMachineScaleSetsClientBeginStartOptions) (resp azfake.PollerResponder[armcompute.VirtualMachineScaleSetsClientStartResponse], errResp azfake.ErrorResponder) {
				w.mu.Lock()
				defer w.mu.Unlock()
				var ids []string
				if opts != nil && opts.VMInstanceIDs != nil {
					for _, id := range opts.VMInstanceIDs.InstanceIDs {
						ids = append(ids, *id)
					}
				}
				for _, vm := range w.vms {
					if len(ids) == 0 || slices.Contains(ids, vm.ID) {
						vm.Power = "starting"
					}
				}
				w.started = append(w.started, ids)
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachineScaleSetsClientStartResponse{}, nil)
				return
			},
			BeginDeleteInstances: func(_ context.Context, rg, set string, ids armcompute.VirtualMachineScaleSetVMInstanceRequiredIDs, _ *armcompute.VirtualMachineScaleSetsClientBeginDeleteInstancesOptions) (resp azfake.PollerResponder[armcompute.VirtualMachineScaleSetsClientDeleteInstancesResponse], errResp azfake.ErrorResponder) {
				w.mu.Lock()
				defer w.mu.Unlock()
				var got []string
				for _, id := range ids.InstanceIDs {
					got = append(got, *id)
					w.removeLocked(*id)
				}
				w.deleted = append(w.deleted, got)
				resp.SetTerminalResponse(http.StatusOK, armcompute.VirtualMachineScaleSetsClientDeleteInstancesResponse{}, nil)
				return
			},
		},
	}
}

func (w *World) networkServers() *networkfake.ServerFactory {
	return &networkfake.ServerFactory{
		InterfacesServer: networkfake.InterfacesServer{
			NewListVirtualMachineScaleSetNetworkInterfacesPager: func(rg, set string, _ *armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesOptions) (resp azfake.PagerResponder[armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesResponse]) {
				w.mu.Lock()
				defer w.mu.Unlock()
				var page []*armnetwork.Interface
				if !w.Flexible { // Flexible scale sets have no such list
					for _, vm := range w.vms {
						page = append(page, w.nicModel(vm))
					}
				}
				resp.AddPage(http.StatusOK, armnetwork.InterfacesClientListVirtualMachineScaleSetNetworkInterfacesResponse{
					InterfaceListResult: armnetwork.InterfaceListResult{Value: page},
				}, nil)
				return
			},
			Get: func(_ context.Context, rg, name string, _ *armnetwork.InterfacesClientGetOptions) (resp azfake.Responder[armnetwork.InterfacesClientGetResponse], errResp azfake.ErrorResponder) {
				w.mu.Lock()
				defer w.mu.Unlock()
				for _, vm := range w.vms {
					if strings.HasSuffix(w.nicID(vm), "/"+name) {
						resp.SetResponse(http.StatusOK, armnetwork.InterfacesClientGetResponse{Interface: *w.nicModel(vm)}, nil)
						return
					}
				}
				errResp.SetResponseError(http.StatusNotFound, "NotFound")
				return
			},
		},
	}
}
