package azure

import (
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"
	"go.uber.org/zap"
)

// Instance is one scale-set VM as the last listing saw it.
type Instance struct {
	// ID is the instance ID that instance APIs take: a number for Uniform
	// scale sets, the VM name for Flexible ones.
	ID         string
	ResourceID string
	// Name is the instance's computer name, the pool's node name.
	Name string
	IP   string // primary private IP; "" if not known
	// Provisioning and Power are the states of the instance view, such as
	// "succeeded" and "running", "deallocated", "starting".
	Provisioning, Power string
	// Live: provisioning succeeded and powered on; only live instances
	// become nodes.
	Live bool
	// Protected is ProtectFromScaleIn as Azure reported it.
	Protected bool

	nics []string // network interface resource IDs, primary first
}

// listing is one complete read of the scale set.
type listing struct {
	instances []Instance
	flexible  bool
}

// list reads every VM of the scale set with its instance view, and the
// private IP of each live one. IPs are remembered per VM, so a steady pool
// costs one list call per poll; new VMs cost one NIC list (Uniform) or one
// NIC Get each (Flexible).
func (s *Source) list(ctx context.Context) (listing, error) {
	flexible, err := s.orchestration(ctx)
	if err != nil {
		return listing{}, err
	}
	var out []Instance
	pager := s.c.vms.NewListPager(s.cfg.ResourceGroup, s.cfg.ScaleSet, &armcompute.VirtualMachineScaleSetVMsClientListOptions{Expand: to.Ptr("instanceView")})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return listing{}, explain(s.cfg, "listing the scale set's VMs", err)
		}
		for _, vm := range page.Value {
			if vm != nil {
				out = append(out, instanceOf(vm))
			}
		}
	}

	s.ipMu.Lock()
	defer s.ipMu.Unlock()
	seen := make(map[string]bool, len(out))
	var missing []int
	for i := range out {
		key := strings.ToLower(out[i].ResourceID)
		seen[key] = true
		if ip, ok := s.ips[key]; ok {
			out[i].IP = ip
		} else if out[i].Live {
			missing = append(missing, i)
		}
	}
	for key := range s.ips {
		if !seen[key] {
			delete(s.ips, key) // the VM is gone
		}
	}
	if len(missing) > 0 {
		if flexible {
			err = s.flexibleIPs(ctx, out, missing)
		} else {
			err = s.uniformIPs(ctx, out)
		}
		if err != nil {
			return listing{}, err
		}
	}
	return listing{instances: out, flexible: flexible}, nil
}

// orchestration reads (once) whether the scale set is Flexible.
func (s *Source) orchestration(ctx context.Context) (bool, error) {
	s.ipMu.Lock()
	known, flexible := s.modeKnown, s.flexible
	s.ipMu.Unlock()
	if known {
		return flexible, nil
	}
	set, err := s.c.sets.Get(ctx, s.cfg.ResourceGroup, s.cfg.ScaleSet, nil)
	if err != nil {
		return false, explain(s.cfg, "reading the scale set", err)
	}
	flexible = set.Properties != nil && set.Properties.OrchestrationMode != nil &&
		*set.Properties.OrchestrationMode == armcompute.OrchestrationModeFlexible
	s.ipMu.Lock()
	s.modeKnown, s.flexible = true, flexible
	s.ipMu.Unlock()
	s.log.Info("scale set found", zap.String("scale_set", s.cfg.ScaleSet), zap.Bool("flexible", flexible))
	return flexible, nil
}

// uniformIPs fills IPs from the scale set's network interfaces, which a
// Uniform scale set lists in one call. Callers hold s.ipMu.
func (s *Source) uniformIPs(ctx context.Context, out []Instance) error {
	byVM := map[string]string{}
	pager := s.c.nics.NewListVirtualMachineScaleSetNetworkInterfacesPager(s.cfg.ResourceGroup, s.cfg.ScaleSet, nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return explain(s.cfg, "listing the scale set's network interfaces", err)
		}
		for _, nic := range page.Value {
			if nic == nil || nic.Properties == nil || nic.Properties.VirtualMachine == nil || nic.Properties.VirtualMachine.ID == nil {
				continue
			}
			vm := strings.ToLower(*nic.Properties.VirtualMachine.ID)
			ip := primaryIP(nic)
			// The VM's primary NIC wins; otherwise the first with an IP.
			if ip != "" && (byVM[vm] == "" || nic.Properties.Primary != nil && *nic.Properties.Primary) {
				byVM[vm] = ip
			}
		}
	}
	for i := range out {
		key := strings.ToLower(out[i].ResourceID)
		if ip := byVM[key]; ip != "" {
			out[i].IP = ip
			s.ips[key] = ip
		}
	}
	return nil
}

// flexibleIPs reads the primary NIC of each VM in missing: Flexible scale
// sets have no scale-set NIC list. Callers hold s.ipMu.
func (s *Source) flexibleIPs(ctx context.Context, out []Instance, missing []int) error {
	for _, i := range missing {
		if len(out[i].nics) == 0 {
			continue
		}
		id, err := arm.ParseResourceID(out[i].nics[0])
		if err != nil {
			s.log.Warn("instance has a malformed network interface ID", zap.String("node", out[i].Name), zap.String("nic", out[i].nics[0]))
			continue
		}
		nic, err := s.c.nics.Get(ctx, id.ResourceGroupName, id.Name, nil)
		if err != nil {
			return explain(s.cfg, fmt.Sprintf("reading network interface %s of %s", id.Name, out[i].Name), err)
		}
		if ip := primaryIP(&nic.Interface); ip != "" {
			out[i].IP = ip
			s.ips[strings.ToLower(out[i].ResourceID)] = ip
		}
	}
	return nil
}

// primaryIP is the private IP of the NIC's primary IP configuration (or
// its first with an address).
func primaryIP(nic *armnetwork.Interface) string {
	if nic == nil || nic.Properties == nil {
		return ""
	}
	first := ""
	for _, c := range nic.Properties.IPConfigurations {
		if c == nil || c.Properties == nil || c.Properties.PrivateIPAddress == nil || *c.Properties.PrivateIPAddress == "" {
			continue
		}
		if c.Properties.Primary != nil && *c.Properties.Primary {
			return *c.Properties.PrivateIPAddress
		}
		if first == "" {
			first = *c.Properties.PrivateIPAddress
		}
	}
	return first
}

// instanceOf reads what discovery needs from one VM of the listing.
func instanceOf(vm *armcompute.VirtualMachineScaleSetVM) Instance {
	in := Instance{ID: deref(vm.InstanceID), ResourceID: deref(vm.ID), Name: deref(vm.Name)}
	if in.ID == "" {
		in.ID = in.Name
	}
	p := vm.Properties
	if p == nil {
		return in
	}
	if p.OSProfile != nil && deref(p.OSProfile.ComputerName) != "" {
		in.Name = *p.OSProfile.ComputerName
	} else if p.InstanceView != nil && deref(p.InstanceView.ComputerName) != "" {
		in.Name = *p.InstanceView.ComputerName
	}
	in.Provisioning = strings.ToLower(deref(p.ProvisioningState))
	if p.InstanceView != nil {
		for _, st := range p.InstanceView.Statuses {
			if st == nil {
				continue
			}
			kind, rest, _ := strings.Cut(deref(st.Code), "/")
			state, _, _ := strings.Cut(rest, "/")
			switch kind {
			case "ProvisioningState":
				in.Provisioning = strings.ToLower(state)
			case "PowerState":
				in.Power = strings.ToLower(state)
			}
		}
	}
	in.Live = in.Provisioning == "succeeded" && in.Power == "running"
	if p.ProtectionPolicy != nil && p.ProtectionPolicy.ProtectFromScaleIn != nil {
		in.Protected = *p.ProtectionPolicy.ProtectFromScaleIn
	}
	if p.NetworkProfile != nil {
		for _, ref := range p.NetworkProfile.NetworkInterfaces {
			if ref == nil || ref.ID == nil {
				continue
			}
			if ref.Properties != nil && ref.Properties.Primary != nil && *ref.Properties.Primary {
				in.nics = append([]string{*ref.ID}, in.nics...)
			} else {
				in.nics = append(in.nics, *ref.ID)
			}
		}
	}
	return in
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
