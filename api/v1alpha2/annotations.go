package v1alpha2

// Annotations and labels understood by the provider and the speaker. The
// OpenELB ones keep their historical names so existing Services and nodes
// work unchanged.
const (
	// AnnotationEip names the Eip (pool) a Service's address comes from. For
	// dual-stack Services it may name one pool per family, comma-separated.
	AnnotationEip = "eip.openelb.kubesphere.io/v1alpha2"
	// AnnotationIP asks for specific address(es), comma-separated for
	// dual-stack; equivalent to spec.loadBalancerIP.
	AnnotationIP = "eip.openelb.kubesphere.io/v1alpha1"
	// AnnotationProtocol is informational: the pool decides the protocol.
	AnnotationProtocol = "protocol.openelb.kubesphere.io/v1alpha1"
	// AnnotationLoadBalancer marks a Service for OpenELB. Accepted, not
	// required: the provider serves every class-less LoadBalancer Service.
	AnnotationLoadBalancer = "lb.kubesphere.io/v1alpha1"
	// AnnotationSharedIP is the sharing key: Services of one namespace
	// carrying the same value may share one address when their ports do
	// not clash.
	AnnotationSharedIP = "openelb.kubesphere.io/shared-ip"
	// AnnotationSharedIPNamespaces lists, comma-separated, the other
	// namespaces whose Services may share this Service's address under
	// the same key ("*" for any). Two Services of different namespaces
	// share only when each lists the other's namespace.
	AnnotationSharedIPNamespaces = "openelb.kubesphere.io/shared-ip-namespaces"
	// AnnotationDefaultEip marks the Eip used when no namespace-bound Eip
	// fits a Service.
	AnnotationDefaultEip = "eip.openelb.kubesphere.io/is-default-eip"

	// AnnotationLayer2Interface chooses, for a Service with a layer2
	// address, the node interface(s) its addresses are answered on,
	// instead of its Eip's: comma-separated names, patterns or
	// can_reach:<IP>, tried in order (see EipLayer2.Interfaces). For
	// multi-homed nodes whose Services live on different segments.
	AnnotationLayer2Interface = "openelb.kubesphere.io/layer2-interface"

	// FinalizerEipProtection is set on every Eip by the CCM: an Eip being
	// deleted stays (its addresses still announced, none handed out) until
	// no Service holds one of its addresses.
	FinalizerEipProtection = "openelb.kubesphere.io/eip-protection"

	// LabelSpeaker gates the speaker DaemonSet onto a node.
	LabelSpeaker = "lb.kubesphere.io/v1alpha1"
	// LabelSpeakerValue is the value LabelSpeaker must have.
	LabelSpeakerValue = "openelb"
	// LabelRack places a node in a rack (seed 000: leaf1, leaf2...).
	LabelRack = "openelb.kubesphere.io/rack"
)

// Protocols an Eip can announce its addresses with.
const (
	ProtocolBGP    = "bgp"
	ProtocolLayer2 = "layer2"
	// ProtocolVIP is accepted by the schema for OpenELB compatibility but
	// not implemented; the Eip gets a condition saying so.
	ProtocolVIP = "vip"
)
