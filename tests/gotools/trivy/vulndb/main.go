// Command vulndb writes a small Trivy vulnerability database from our
// advisories JSON, so the real trivy can scan SBOMs offline in tests.
//
//	vulndb -advisories advisories.json -out CACHE_DIR
//
// writes CACHE_DIR/db/trivy.db and CACHE_DIR/db/metadata.json, which is
// where `trivy --cache-dir CACHE_DIR` looks. The database is written by
// trivy-db's own code (db.Config's Put* functions, then vulndb.Build's
// optimize and cleanup passes), so it has exactly the layout trivy reads.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	fakeclock "k8s.io/utils/clock/testing"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/metadata"
	"github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy-db/pkg/vulndb"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/bucket"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/vulnerability"
)

// A fixed clock keeps metadata.json reproducible; NextUpdate is far in the
// future so trivy never considers the DB stale and never tries to download.
var (
	fixedTime  = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	nextUpdate = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
)

type advisoryFile struct {
	Advisories []advisory `json:"advisories"`
}

type advisory struct {
	ID            string  `json:"id"`
	Distro        string  `json:"distro"`
	DistroVersion string  `json:"distro_version"`
	Package       string  `json:"package"`       // source package name
	FixedVersion  *string `json:"fixed_version"` // nil: no fix, every version affected
	Severity      string  `json:"severity"`
	Description   string  `json:"description"`
	// Ecosystem is reserved for language packages (not implemented yet).
	Ecosystem string `json:"ecosystem,omitempty"`
}

// Data sources as the real trivy-db records them, so trivy reports the same
// DataSource and picks the vendor severity stored under the same source ID.
var sources = map[string]types.DataSource{
	"alpine": {ID: vulnerability.Alpine, Name: "Alpine Secdb", URL: "https://secdb.alpinelinux.org/"},
	"debian": {ID: vulnerability.Debian, Name: "Debian Security Tracker", URL: "https://salsa.debian.org/security-tracker-team/security-tracker"},
}

// src is a trivy-db vulnsrc.VulnSrc fed from our JSON instead of vuln-list.
type src struct {
	dbc        db.Config
	advisories []advisory
}

func (s src) Name() types.SourceID { return "vexxy" }

func (s src) Update(string) error {
	return s.dbc.BatchUpdate(func(tx *bolt.Tx) error {
		for _, a := range s.advisories {
			if err := s.put(tx, a); err != nil {
				return fmt.Errorf("%s %s: %w", a.ID, a.Package, err)
			}
		}
		return nil
	})
}

// put mirrors what trivy-db's alpine and debian sources store per advisory:
// the advisory under advisory-detail/<id>/<"alpine 3.17"|"debian 12">/<pkg>,
// vendor details (severity, description) under vulnerability-detail, the ID
// for the optimize pass, and the data source of the platform bucket.
func (s src) put(tx *bolt.Tx, a advisory) error {
	if a.Ecosystem != "" {
		return fmt.Errorf("ecosystem %q: not supported yet", a.Ecosystem)
	}
	var platform string
	switch a.Distro {
	case "alpine":
		platform = bucket.NewAlpine(a.DistroVersion).Name()
	case "debian":
		platform = bucket.NewDebian(a.DistroVersion).Name()
	default:
		return fmt.Errorf("distro %q: not supported", a.Distro)
	}
	source := sources[a.Distro]

	sev, err := severity(a.Severity)
	if err != nil {
		return err
	}
	adv := types.Advisory{}
	if a.FixedVersion != nil {
		adv.FixedVersion = *a.FixedVersion
	} else {
		adv.Status = types.StatusAffected // empty FixedVersion: all versions affected
	}
	if a.Distro == "debian" {
		adv.Severity = sev // Debian carries a per-package severity, as in the real DB
	}

	if err := s.dbc.PutAdvisoryDetail(tx, a.ID, a.Package, []string{platform}, &adv); err != nil {
		return err
	}
	detail := types.VulnerabilityDetail{Severity: sev, Description: a.Description}
	if err := s.dbc.PutVulnerabilityDetail(tx, a.ID, source.ID, detail); err != nil {
		return err
	}
	if err := s.dbc.PutVulnerabilityID(tx, a.ID); err != nil {
		return err
	}
	return s.dbc.PutDataSource(tx, platform, source)
}

func main() {
	in := flag.String("advisories", "", "advisories JSON file")
	out := flag.String("out", "", "trivy cache dir; writes OUT/db/trivy.db and OUT/db/metadata.json")
	flag.Parse()
	if *in == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var f advisoryFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	// Stable insertion order for a reproducible file.
	sort.SliceStable(f.Advisories, func(i, j int) bool {
		a, b := f.Advisories[i], f.Advisories[j]
		return a.ID+"\x00"+a.Package < b.ID+"\x00"+b.Package
	})

	dbDir := filepath.Join(out, "db") // trivy's db.Dir(cacheDir)
	// Start from scratch: bolt would otherwise add to an old file.
	if err := os.Remove(db.Path(dbDir)); err != nil && !os.IsNotExist(err) {
		return err
	}
	if err := db.Init(dbDir); err != nil {
		return err
	}

	s := src{dbc: db.Config{}, advisories: f.Advisories}
	build := vulndb.New("", dbDir, nextUpdate.Sub(fixedTime),
		vulndb.WithVulnSrcs(map[types.SourceID]vulnsrc.VulnSrc{s.Name(): s}),
		vulndb.WithClock(fakeclock.NewFakeClock(fixedTime)))
	err = build.Build([]string{string(s.Name())})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}

	// Build leaves DownloadedAt zero, which makes trivy want to re-download
	// unless --skip-db-update is given; set it so either way works offline.
	return metadata.NewClient(dbDir).Update(metadata.Metadata{
		Version:      db.SchemaVersion,
		NextUpdate:   nextUpdate,
		UpdatedAt:    fixedTime,
		DownloadedAt: fixedTime,
	})
}

// severity reads Grype's severity words into trivy-db's scale. Grype says Negligible where
// Debian's tracker says "unimportant", which trivy-db's Debian source stores as LOW.
func severity(grype string) (types.Severity, error) {
	switch strings.ToUpper(grype) {
	case "NEGLIGIBLE":
		return types.SeverityLow, nil
	case "", "UNKNOWN":
		return types.SeverityUnknown, nil
	}
	return types.NewSeverity(strings.ToUpper(grype))
}
