//! `LdapDirectory` against a real OpenLDAP server (Debian's `slapd`): the test
//! writes a slapd.conf (mdb backend) and an LDIF into a temp directory, loads
//! it with `slapadd`, runs `slapd` in the foreground on 127.0.0.1 with a free
//! port, and kills it by PID at the end.
//!
//! Active Directory's `user` class and its `sAMAccountName`,
//! `userAccountControl` and `objectCategory` attributes are not in OpenLDAP's
//! standard schemas, so a tiny schema defines them under AD's own OIDs. (The
//! `msuser.schema` slapd ships gives them no EQUALITY rule, so no filter could
//! match them.) One approximation: AD expands `(objectCategory=person)` to the
//! DN `CN=Person,CN=Schema,...`; slapd has no such expansion, so here
//! `objectCategory` is a string holding `person` (or `computer`).
//!
//! Needs `slapd` (and, for debugging by hand, `ldap-utils`): see
//! scripts/install-deps.sh. Without them the test fails; it never skips.

use hbgw_controlplane::heartbeat::directory::{DirectoryError, DirectoryUser, LdapDirectory, LdapDirectoryConfig, UserDirectory};
use hbgw_controlplane::heartbeat::protocol::UserAccount;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUFFIX: &str = "dc=corp,dc=example";
const SERVICE_DN: &str = "cn=svc-gateway,ou=Service,dc=corp,dc=example";
const SERVICE_PASSWORD: &str = "svc-secret";

const AD_SCHEMA: &str = "\
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
\tEQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
\tEQUALITY integerMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.782 NAME 'objectCategory'
\tEQUALITY caseIgnoreMatch
\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user'
\tSUP organizationalPerson STRUCTURAL
\tMUST sAMAccountName
\tMAY ( userAccountControl $ objectCategory $ displayName ) )
";

/// The directory: a service account, an enabled user (512 = NORMAL_ACCOUNT),
/// a disabled one (514 = NORMAL_ACCOUNT | ACCOUNTDISABLE), a computer account
/// (objectClass user too in AD, but objectCategory computer) and a referral,
/// as AD returns for its DNS / configuration partitions under the domain root.
const DATA_LDIF: &str = "\
dn: dc=corp,dc=example
objectClass: dcObject
objectClass: organization
dc: corp
o: Corp

dn: ou=Service,dc=corp,dc=example
objectClass: organizationalUnit
ou: Service

dn: cn=svc-gateway,ou=Service,dc=corp,dc=example
objectClass: person
cn: svc-gateway
sn: gateway
userPassword: svc-secret

dn: ou=Users,dc=corp,dc=example
objectClass: organizationalUnit
ou: Users

dn: cn=Alice Example,ou=Users,dc=corp,dc=example
objectClass: user
cn: Alice Example
sn: Example
sAMAccountName: alice
displayName: Alice Example
userAccountControl: 512
objectCategory: person

dn: cn=Bob NoDisplay,ou=Users,dc=corp,dc=example
objectClass: user
cn: Bob NoDisplay
sn: NoDisplay
sAMAccountName: bob
userAccountControl: 66048
objectCategory: person

dn: cn=Gone Away,ou=Users,dc=corp,dc=example
objectClass: user
cn: Gone Away
sn: Away
sAMAccountName: gone
displayName: Gone Away
userAccountControl: 514
objectCategory: person

dn: cn=PC1,ou=Users,dc=corp,dc=example
objectClass: user
cn: PC1
sn: PC1
sAMAccountName: PC1$
userAccountControl: 4096
objectCategory: computer

dn: ou=Branch,dc=corp,dc=example
objectClass: referral
objectClass: extensibleObject
ou: Branch
ref: ldap://127.0.0.1:1/ou=Branch,dc=corp,dc=example
";

const INSTALL_HINT: &str = "install the Debian packages `slapd` and `ldap-utils` (scripts/install-deps.sh does)";

/// A running slapd; dropping it kills slapd by PID, then removes its directory.
struct Slapd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // Only this child, by its PID; then reap it. The TempDir field is
        // dropped (removed) after this, once slapd no longer holds its files.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sbin(tool: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(tool);
    if p.exists() {
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.exists()))
        .unwrap_or_else(|| panic!("`{tool}` not found (looked in /usr/sbin and PATH): {INSTALL_HINT}"))
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(sbin(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}: {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{}{}\n({INSTALL_HINT})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes the config and data, loads them, and starts slapd; panics (naming
/// the package) if it cannot.
fn start_slapd() -> Slapd {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("db")).unwrap();
    std::fs::write(d.join("ad-user.schema"), AD_SCHEMA).unwrap();
    std::fs::write(d.join("data.ldif"), DATA_LDIF).unwrap();
    // Reading the service account's password: only to bind. Everything else:
    // only for bound users (so an anonymous search sees nothing).
    let conf = format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         include {dir}/ad-user.schema\n\
         pidfile {dir}/slapd.pid\n\
         argsfile {dir}/slapd.args\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         database mdb\n\
         suffix \"{SUFFIX}\"\n\
         rootdn \"cn=admin,{SUFFIX}\"\n\
         rootpw admin-secret\n\
         directory {dir}/db\n\
         maxsize 10485760\n\
         access to attrs=userPassword by anonymous auth by * none\n\
         access to * by users read by * none\n",
        dir = d.display()
    );
    let conf_path = d.join("slapd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let conf_arg = conf_path.to_str().unwrap();
    run("slaptest", &["-u", "-f", conf_arg]);
    run("slapadd", &["-f", conf_arg, "-l", d.join("data.ldif").to_str().unwrap()]);

    let log_path = d.join("slapd.log");
    for _attempt in 0..3 {
        // A free port can be taken between the probe and slapd's bind: retry.
        let port = free_port();
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(sbin("slapd"))
            // -d 0: stay in the foreground, so the child's PID is slapd's.
            .args(["-d", "0", "-f", conf_arg, "-h", &format!("ldap://127.0.0.1:{port}/")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start slapd: {e}: {INSTALL_HINT}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Address already in use") {
                    break;
                }
                panic!("slapd exited at start ({status}):\n{log}\n({INSTALL_HINT})");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Slapd { child, port, dir };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("slapd did not listen on 127.0.0.1:{port} within 10 s:\n{log}\n({INSTALL_HINT})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("slapd could not bind a free port on 127.0.0.1 in 3 attempts");
}

fn acct(domain: &str, user: &str) -> UserAccount {
    UserAccount { domain: domain.into(), user: user.into() }
}

fn config(url: String, password: &str) -> LdapDirectoryConfig {
    LdapDirectoryConfig {
        url,
        base_dn: SUFFIX.into(),
        bind_dn: Some(SERVICE_DN.into()),
        bind_password: Some(password.into()),
        domains: vec!["CORP".into(), "corp.example".into()],
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_directory_against_a_real_openldap() {
    let slapd = start_slapd();
    let url = format!("ldap://127.0.0.1:{}", slapd.port);
    let dir = LdapDirectory::new(config(url.clone(), SERVICE_PASSWORD));
    assert!(dir.describe().contains(&url), "{}", dir.describe());

    // An existing domain user: found, with the directory's spelling and display name.
    let alice = dir.lookup(&acct("CORP", "alice")).await.expect("lookup alice");
    assert_eq!(
        alice,
        Some(DirectoryUser { domain: "CORP".into(), user: "alice".into(), display_name: Some("Alice Example".into()), enabled: true })
    );
    // Account names and domains match case-insensitively, as in AD.
    let upper = dir.lookup(&acct("corp.EXAMPLE", "ALICE")).await.unwrap().expect("ALICE found");
    assert_eq!(upper.user, "alice", "the directory's spelling");
    assert_eq!(upper.domain, "corp.EXAMPLE", "the domain as signed in");
    assert!(upper.enabled);
    // No displayName: None; 66048 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD is enabled.
    let bob = dir.lookup(&acct("CORP", "bob")).await.unwrap().expect("bob found");
    assert_eq!(bob.display_name, None);
    assert!(bob.enabled, "66048 has no ACCOUNTDISABLE bit");

    // Unknown user: not found (and the referral under the base is no error).
    assert_eq!(dir.lookup(&acct("CORP", "mallory")).await.unwrap(), None);
    // Filter metacharacters are escaped: `*` is not a wildcard.
    assert_eq!(dir.lookup(&acct("CORP", "*")).await.unwrap(), None);
    assert_eq!(dir.lookup(&acct("CORP", "a*")).await.unwrap(), None);
    // A computer account (objectClass user, objectCategory computer) is no person.
    assert_eq!(dir.lookup(&acct("CORP", "PC1$")).await.unwrap(), None);
    // An entry without the user class (the service account) is not found either.
    assert_eq!(dir.lookup(&acct("CORP", "svc-gateway")).await.unwrap(), None);

    // Disabled (514 = NORMAL_ACCOUNT | ACCOUNTDISABLE): found but not enabled,
    // which the heartbeat service does not bind.
    let gone = dir.lookup(&acct("CORP", "gone")).await.unwrap().expect("gone found");
    assert!(!gone.enabled, "ACCOUNTDISABLE (0x2) set: {gone:?}");
    assert_eq!(gone.display_name.as_deref(), Some("Gone Away"));

    // A domain the directory does not serve: not found, without asking the server.
    assert_eq!(dir.lookup(&acct("OTHER", "alice")).await.unwrap(), None);
    // Empty domain list: it answers for any domain.
    let any = LdapDirectory::new(LdapDirectoryConfig { domains: vec![], ..config(url.clone(), SERVICE_PASSWORD) });
    assert!(any.lookup(&acct("OTHER", "alice")).await.unwrap().is_some());

    // Wrong service password: an error (invalidCredentials), never "not found".
    let wrong = LdapDirectory::new(config(url.clone(), "not-the-password"));
    let err = wrong.lookup(&acct("CORP", "alice")).await.expect_err("a wrong bind password must fail");
    assert!(matches!(err, DirectoryError::Ldap(_)), "{err:?}");
    assert!(err.to_string().contains("rc=49"), "invalidCredentials expected: {err}");
    // An unknown bind DN: the same.
    let nobody = LdapDirectory::new(LdapDirectoryConfig {
        bind_dn: Some(format!("cn=nobody,{SUFFIX}")),
        ..config(url.clone(), SERVICE_PASSWORD)
    });
    assert!(matches!(nobody.lookup(&acct("CORP", "alice")).await, Err(DirectoryError::Ldap(_))));
    // A base DN that does not exist: an error (noSuchObject), not "not found".
    let bad_base = LdapDirectory::new(LdapDirectoryConfig {
        base_dn: format!("ou=Nowhere,{SUFFIX}"),
        ..config(url.clone(), SERVICE_PASSWORD)
    });
    let err = bad_base.lookup(&acct("CORP", "alice")).await.expect_err("a missing base DN must fail");
    assert!(err.to_string().contains("rc=32"), "noSuchObject expected: {err}");

    // Unreachable servers fail within the timeout. Nothing listening: refused.
    let timeout = Duration::from_secs(1);
    let closed = LdapDirectory::new(LdapDirectoryConfig { timeout, ..config(format!("ldap://127.0.0.1:{}", free_port()), SERVICE_PASSWORD) });
    let t0 = Instant::now();
    let err = closed.lookup(&acct("CORP", "alice")).await.expect_err("a closed port must fail");
    assert!(t0.elapsed() < timeout + Duration::from_millis(500), "took {:?}", t0.elapsed());
    assert!(matches!(err, DirectoryError::Ldap(_) | DirectoryError::Timeout(_)), "{err:?}");
    // A server that accepts but never answers (hung): the timeout fires.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung = LdapDirectory::new(LdapDirectoryConfig { timeout, ..config(format!("ldap://{}", silent.local_addr().unwrap()), SERVICE_PASSWORD) });
    let t0 = Instant::now();
    let err = hung.lookup(&acct("CORP", "alice")).await.expect_err("a silent server must time out");
    let took = t0.elapsed();
    assert!(matches!(err, DirectoryError::Timeout(t) if t == timeout), "{err:?}");
    assert!(took >= timeout && took < timeout + Duration::from_millis(500), "took {took:?}");
    drop(silent);

    // The real server is still fine after all that.
    assert!(dir.lookup(&acct("CORP", "alice")).await.unwrap().is_some());

    // Clean up: slapd killed by PID, its directory removed.
    let pid = slapd.child.id();
    let path = slapd.dir.path().to_path_buf();
    drop(slapd);
    assert!(!path.exists(), "temp dir {} left behind", path.display());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "slapd {pid} still running");
}
