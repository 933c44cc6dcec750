package seedlab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// ImageTag tags the images built from this tree for the real nodes (the
// release set and the lab set of hack/ociimage).
const ImageTag = "dev"

// SandboxImage is the pods' sandbox ("pause") image of the lab set.
const SandboxImage = "docker.io/openelb/openelb-lab-pause:" + ImageTag

// BuildImages builds an image set of hack/ociimage ("release": the
// provider's two images, as make image; "lab": the sandbox and the test
// backend, as make image-lab) tagged ImageTag into dir, and returns the
// tarballs.
func BuildImages(ctx context.Context, set, dir string) ([]string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", "run", "./hack/ociimage", "-set", set, "-out", dir, "-tag", ImageTag)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the %s images: %w\n%s", set, err, out)
	}
	tars, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil || len(tars) == 0 {
		return nil, fmt.Errorf("no %s images in %s: %v", set, dir, err)
	}
	return tars, nil
}

// ApplyDeploy runs `kubectl apply -k` on an overlay of the deploy/
// directory deployDir that only points the two images at tag (imported on
// the nodes, pulled never). The overlay is written into dir.
func (l *Lab) ApplyDeploy(ctx context.Context, dir, deployDir, tag string) error {
	// kustomize takes bases by relative path only.
	base, err := filepath.Rel(dir, deployDir)
	if err != nil {
		return err
	}
	overlay := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
images:
  - name: openelb/openelb-cloud-controller-manager
    newName: docker.io/openelb/openelb-cloud-controller-manager
    newTag: %[2]s
  - name: openelb/openelb-speaker
    newName: docker.io/openelb/openelb-speaker
    newTag: %[2]s
`, base, tag)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		return err
	}
	if out, err := l.CP.Kubectl(ctx, "apply", "-k", dir); err != nil {
		return fmt.Errorf("kubectl apply -k (overlay of %s): %w\n%s", deployDir, err, out)
	}
	return nil
}

// BackendDeployment is a Deployment of the lab's backend, one pod per node
// at most: each answers HTTP on 8080 with its pod's and node's names and
// the client's address as it sees it, and keeps serving 5 s after SIGTERM.
func BackendDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	fieldEnv := func(env, path string) v1.EnvVar {
		return v1.EnvVar{Name: env, ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: path}}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					Affinity: &v1.Affinity{PodAntiAffinity: &v1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []v1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
							TopologyKey:   v1.LabelHostname,
						}},
					}},
					Containers: []v1.Container{{
						Name: "backend", Image: "docker.io/openelb/openelb-lab-backend:" + ImageTag,
						ImagePullPolicy: v1.PullNever,
						Env:             []v1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("NODE_NAME", "spec.nodeName")},
						Ports:           []v1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &v1.Probe{
							ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}
