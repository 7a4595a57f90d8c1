package e2e

import (
	"errors"
	"io/fs"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// A node taken out of the daemon's nodeSelector loses its daemon for good:
// the daemon removes the node conflist as it stops, and leaves its
// NodeNetworkStatus not Ready, saying why, rather than the last Ready it
// wrote while it served.
var _ = Describe("a node taken out of the daemon's nodeSelector", Serial, func() {
	It("loses its conflist and its NodeNetworkStatus reads Ready False, Uninstalled, until plexus is back", func(ctx SpecContext) {
		reinstallAfter()
		waitNodeConfigured(ctx, time.Time{})
		start := time.Now()
		install(ctx, "--set-string", `nodeSelector.plexus\.cni\.dev/e2e-away=true`)

		Eventually(func() bool {
			_, err := os.Stat(cluster.PlexusConflist)
			return errors.Is(err, fs.ErrNotExist)
		}).WithContext(ctx).WithTimeout(time.Minute).Should(BeTrue(), "%s still there after the daemon left the node", cluster.PlexusConflist)
		var ready *metav1.Condition
		Eventually(func(g Gomega) {
			nns := &v1alpha1.NodeNetworkStatus{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
			ready = meta.FindStatusCondition(nns.Status.Conditions, v1alpha1.ConditionReady)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Status).To(BeEquivalentTo("False"))
			g.Expect(ready.Reason).To(Equal(controllers.ReasonUninstalled))
			g.Expect(ready.Message).To(And(ContainSubstring("no longer matches DaemonSet"), ContainSubstring("was removed")))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		AddReportEntry("Ready once the daemon left the node", ready.Reason+": "+ready.Message)
		By("the node status said so " + time.Since(start).Round(100*time.Millisecond).String() + " after helm upgrade started")
	})
})
