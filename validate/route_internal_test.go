package validate

import (
	"net/http/httptest"
	"testing"
)

// exactPaths are requests whose path is a template's as it is written:
// the common case, which variant matching must not make dearer.
var exactPaths = []struct{ method, target string }{
	{"POST", "/orders"},
	{"GET", "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7/items/3"},
}

// An exact match allocates what it did before route variants were
// matched: the split path, and the parameters' map (its header and one
// bucket) where there are parameters.
func TestExactRouteMatchAllocations(t *testing.T) {
	a, err := loadAPI("testdata/orders-3.1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{1, 3} {
		r := httptest.NewRequest(exactPaths[i].method, exactPaths[i].target, nil)
		if got := testing.AllocsPerRun(100, func() {
			if _, _, _, err := a.match(r); err != nil {
				t.Fatal(err)
			}
		}); got != want {
			t.Errorf("%s %s: %v allocations, want %v", r.Method, exactPaths[i].target, got, want)
		}
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	a, err := loadAPI("testdata/orders-3.1.yaml")
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range append(exactPaths, struct{ method, target string }{"POST", "/ORDERS/"}) {
		r := httptest.NewRequest(p.method, p.target, nil)
		b.Run(p.target, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _, _, _ = a.match(r)
			}
		})
	}
}
