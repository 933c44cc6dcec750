package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ClaimPort is a port a Service holding a claim uses; sharers must not clash.
type ClaimPort struct {
	Protocol string `json:"protocol"`
	// Port is a Service port.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// ClaimOwner is a Service holding the address.
type ClaimOwner struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
	// +optional
	// +listType=atomic
	Ports []ClaimPort `json:"ports,omitempty"`
}

// ClaimService names a Service that may not exist yet.
type ClaimService struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// IPClaimSpec records who holds an address.
//
// +kubebuilder:validation:XValidation:rule="!has(self.reservedBy) || !has(self.owners) || size(self.owners) == 0",message="a reserved claim has no owners"
// +kubebuilder:validation:XValidation:rule="!has(self.reservedBy) || !has(self.reservedFor)",message="a claim is reserved by the CCM (reservedBy) or for a Service (reservedFor), not both"
type IPClaimSpec struct {
	// Address claimed.
	// +kubebuilder:validation:XValidation:rule="isIP(self)",message="address must be an IP address"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="address is immutable"
	Address string `json:"address"`
	// Pool the address came from.
	// +optional
	Pool string `json:"pool,omitempty"`
	// SharingKey is the openelb.kubesphere.io/shared-ip value of the owners;
	// empty when the address is not shared.
	// +optional
	SharingKey string `json:"sharingKey,omitempty"`
	// Owners are the Services holding the address (more than one only when
	// shared).
	// +optional
	// +listType=atomic
	Owners []ClaimOwner `json:"owners"`
	// ReservedBy names the CCM process (leader) that claimed the address
	// ahead of demand, so a new Service can be given it without a claim
	// round trip; the claim is bound (ReservedBy cleared, Owners set) after
	// the Service's status is written, within 5 seconds. Empty for bound
	// claims.
	// +optional
	ReservedBy string `json:"reservedBy,omitempty"`
	// ReservedFor is written by an admin: the address is held for this
	// Service, which may not exist yet. Nobody else gets it (automatically
	// or by asking); the Service gets it when it appears (as if it had
	// requested it: the address must lie in an Eip its namespace may use)
	// and keeps the reservation across its deletion and re-creation. The
	// CCM only sets and clears Owners of such a claim, never deletes it;
	// deleting the claim ends the reservation. Name the claim after the
	// address (metadata.name: the IPv4 address, or ClaimName's v6- form).
	// +optional
	ReservedFor *ClaimService `json:"reservedFor,omitempty"`
}

// IPClaim is the API server's record that an address is taken. Its name is
// derived from the address (ClaimName), so two CCM replicas racing for one
// address cannot both create it: the API server is the arbiter and a
// duplicate address is impossible even across leader changes or a SIGKILL
// mid-allocation. The CCM creates and deletes these, except reservations (below).
// The leader also keeps a couple of reserved claims per pool (spec.reservedBy
// set, no owners) so a new Service's address is published after one write
// instead of two; reservations left by an earlier leader are bound to the
// Service whose status shows their address, or deleted after a grace period,
// by the next leader.
//
// Admins write one kind of IPClaim: a reservation for a future Service
// (spec.reservedFor), which holds an address for it before it exists.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=networking
// +kubebuilder:validation:XValidation:rule="!has(self.spec.reservedFor) || !isIP(self.spec.address) || ip(self.spec.address).family() != 4 || self.metadata.name == self.spec.address",message="an IPClaim is named after its address: metadata.name must be spec.address"
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.address`
// +kubebuilder:printcolumn:name="Pool",type=string,JSONPath=`.spec.pool`
// +kubebuilder:printcolumn:name="Owner",type=string,JSONPath=`.spec.owners[0].name`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.owners[0].namespace`
// +kubebuilder:printcolumn:name="Reserved For",type=string,JSONPath=`.spec.reservedFor.name`
// +kubebuilder:printcolumn:name="Reserved By",type=string,JSONPath=`.spec.reservedBy`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPClaimSpec `json:"spec"`
}

// IPClaimList is a list of IPClaim.
//
// +kubebuilder:object:root=true
type IPClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPClaim `json:"items"`
}
