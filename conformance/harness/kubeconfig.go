package harness

import (
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

type impersonation struct {
	user   string
	groups []string
}

// writeKubeconfig writes a single-context kubeconfig using a bearer token.
func writeKubeconfig(path, server string, caPEM []byte, userName, token, namespace string, imp *impersonation) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["openelb"] = &clientcmdapi.Cluster{
		Server:                   server,
		CertificateAuthorityData: caPEM,
	}
	auth := &clientcmdapi.AuthInfo{Token: token}
	if imp != nil {
		auth.Impersonate = imp.user
		auth.ImpersonateGroups = imp.groups
	}
	cfg.AuthInfos[userName] = auth
	cfg.Contexts["openelb"] = &clientcmdapi.Context{
		Cluster:   "openelb",
		AuthInfo:  userName,
		Namespace: namespace,
	}
	cfg.CurrentContext = "openelb"
	return clientcmd.WriteToFile(*cfg, path)
}
