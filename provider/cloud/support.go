package cloud

import (
	"context"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// Condition and reason of a BgpConf or BgpPeer with fields set that the
// speakers do not carry out (v1alpha2.BgpConfFields, BgpPeerFields).
const (
	ConditionUnsupported   = "Unsupported"
	ReasonUnsupportedField = "UnsupportedField"
)

// supportLoop keeps the Unsupported condition of every BgpConf and BgpPeer
// true: OpenELB manifests apply unchanged, and a field the speakers accept
// but do not carry out is said so on the object itself, never silently
// ignored. A pass reads the cached objects and writes only conditions
// that change, so the speakers' status writes cost no write here.
func (p *Provider) supportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.supportDirty:
		}
		if err := p.syncSupport(ctx); err != nil {
			klog.FromContext(ctx).V(2).Info("Writing Unsupported conditions failed; retrying", "err", err)
			time.AfterFunc(time.Second, func() { signal(p.supportDirty) })
		}
	}
}

func (p *Provider) syncSupport(ctx context.Context) error {
	peers, err := p.cluster.BgpPeers(ctx)
	if err != nil {
		return err
	}
	confs, err := p.cluster.BgpConfs(ctx)
	if err != nil {
		return err
	}
	var firstErr error
	for _, bp := range peers {
		conds, changed := supportConditions(bp.Status.Conditions, v1alpha2.UnsupportedFields(&bp.Spec, v1alpha2.BgpPeerFields), bp.Generation)
		if !changed {
			continue
		}
		if err := p.cluster.PatchBgpPeerConditions(ctx, bp, conds); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, c := range confs {
		conds, changed := supportConditions(c.Status.Conditions, v1alpha2.UnsupportedFields(&c.Spec, v1alpha2.BgpConfFields), c.Generation)
		if !changed {
			continue
		}
		if err := p.cluster.PatchBgpConfConditions(ctx, c, conds); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// supportConditions is existing with the Unsupported condition set for
// the fields (removed when there are none), and whether that changed it.
func supportConditions(existing []metav1.Condition, fields []string, generation int64) ([]metav1.Condition, bool) {
	cur := meta.FindStatusCondition(existing, ConditionUnsupported)
	if len(fields) == 0 {
		if cur == nil {
			return existing, false
		}
		out := append([]metav1.Condition(nil), existing...)
		meta.RemoveStatusCondition(&out, ConditionUnsupported)
		return out, true
	}
	msg := "set but not carried out by the speakers: " + strings.Join(fields, "; ")
	if cur != nil && cur.Status == metav1.ConditionTrue && cur.Reason == ReasonUnsupportedField && cur.Message == msg && cur.ObservedGeneration == generation {
		return existing, false
	}
	out := append([]metav1.Condition(nil), existing...)
	meta.SetStatusCondition(&out, metav1.Condition{Type: ConditionUnsupported, Status: metav1.ConditionTrue,
		Reason: ReasonUnsupportedField, Message: msg, ObservedGeneration: generation})
	return out, true
}
