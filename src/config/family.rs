//! The panel family a node stands in for (Pterodactyl or Pelican): the
//! default config path and directories, and where local backups and
//! installation logs live (`KeepConfig`).

use std::path::{Path, PathBuf};

use super::{ConfigError, Reader, DEFAULT_PATH};

/// Pelican's Wings keeps its config here; read when Pterodactyl's is absent.
pub const PELICAN_PATH: &str = "/etc/pelican/config.yml";

/// The config path when none is given: Pterodactyl's, else Pelican's when
/// only that one exists (as a Pelican node is installed).
pub fn default_path() -> &'static str {
    default_path_among(
        Path::new(DEFAULT_PATH).exists(),
        Path::new(PELICAN_PATH).exists(),
    )
}

fn default_path_among(pterodactyl: bool, pelican: bool) -> &'static str {
    if !pterodactyl && pelican {
        PELICAN_PATH
    } else {
        DEFAULT_PATH
    }
}

/// Which Wings the node stands in for: it decides the default directories
/// and the layout of local backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelFamily {
    /// Pterodactyl Wings: `<backup_directory>/<backup>.tar.gz`.
    Pterodactyl,
    /// Pelican Wings: `/var/lib/pelican`, `/var/log/pelican`, and
    /// `<backup_directory>/<server>/<backup>.tar.gz`.
    Pelican,
}

/// The family's default directories (Wings' `config.go` defaults; Pelican's
/// packaging moves `pterodactyl` to `pelican` in each).
pub struct FamilyDefaults {
    pub root_directory: &'static str,
    pub data: &'static str,
    pub backup_directory: &'static str,
    pub log_directory: &'static str,
}

impl PanelFamily {
    /// Pelican for a config under `/etc/pelican/`, else Pterodactyl.
    pub fn of_config_path(path: &Path) -> PanelFamily {
        match path.parent().and_then(|p| p.file_name()) {
            Some(dir) if dir == "pelican" => PanelFamily::Pelican,
            _ => PanelFamily::Pterodactyl,
        }
    }

    pub fn defaults(self) -> FamilyDefaults {
        match self {
            PanelFamily::Pterodactyl => FamilyDefaults {
                root_directory: "/var/lib/pterodactyl",
                data: "/var/lib/pterodactyl/volumes",
                backup_directory: "/var/lib/pterodactyl/backups",
                log_directory: "/var/log/pterodactyl",
            },
            PanelFamily::Pelican => FamilyDefaults {
                root_directory: "/var/lib/pelican",
                data: "/var/lib/pelican/volumes",
                backup_directory: "/var/lib/pelican/backups",
                log_directory: "/var/log/pelican",
            },
        }
    }
}

/// Where local backups and installation logs live (Wings' keys).
#[derive(Debug, Clone, PartialEq)]
pub struct KeepConfig {
    pub family: PanelFamily,
    /// `system.backup_directory`.
    pub backup_directory: PathBuf,
    /// `system.log_directory`; installation logs are `install/<uuid>.log` in it.
    pub log_directory: PathBuf,
}

impl KeepConfig {
    /// A local backup's file, in the family's layout.
    pub fn backup_file(&self, server: &str, backup: &str) -> PathBuf {
        let name = format!("{backup}.tar.gz");
        match self.family {
            PanelFamily::Pterodactyl => self.backup_directory.join(name),
            PanelFamily::Pelican => self.backup_directory.join(server).join(name),
        }
    }

    /// A server's installation log.
    pub fn install_log(&self, server: &str) -> PathBuf {
        self.log_directory
            .join("install")
            .join(format!("{server}.log"))
    }
}

impl Reader<'_> {
    pub(super) fn keep(&mut self) -> Result<KeepConfig, ConfigError> {
        let defaults = self.family.defaults();
        Ok(KeepConfig {
            family: self.family,
            backup_directory: self.path("system.backup_directory", defaults.backup_directory)?,
            log_directory: self.path("system.log_directory", defaults.log_directory)?,
        })
    }
}

#[cfg(test)]
mod keep_tests {
    use super::*;
    use crate::config::{parse, parse_as};

    #[test]
    fn pelican_config_is_read_only_when_pterodactyls_is_absent() {
        assert_eq!(default_path_among(true, true), DEFAULT_PATH);
        assert_eq!(default_path_among(true, false), DEFAULT_PATH);
        assert_eq!(default_path_among(false, true), PELICAN_PATH);
        assert_eq!(default_path_among(false, false), DEFAULT_PATH);
    }

    #[test]
    fn a_pelican_config_gets_pelicans_directories_and_layout() {
        let family = PanelFamily::of_config_path(Path::new(PELICAN_PATH));
        assert_eq!(family, PanelFamily::Pelican);
        let c = parse_as("token: tttttttttttt\n", family).unwrap();
        assert_eq!(c.system.root_directory, PathBuf::from("/var/lib/pelican"));
        assert_eq!(c.system.data, PathBuf::from("/var/lib/pelican/volumes"));
        assert_eq!(
            c.system.keep.backup_file("s", "b"),
            PathBuf::from("/var/lib/pelican/backups/s/b.tar.gz")
        );
        assert_eq!(
            c.system.keep.install_log("s"),
            PathBuf::from("/var/log/pelican/install/s.log")
        );
    }

    #[test]
    fn pterodactyl_keeps_backups_flat_and_the_keys_move_them() {
        assert_eq!(
            PanelFamily::of_config_path(Path::new(DEFAULT_PATH)),
            PanelFamily::Pterodactyl
        );
        let c = parse("token: tttttttttttt\n").unwrap();
        assert_eq!(
            c.system.keep.backup_file("s", "b"),
            PathBuf::from("/var/lib/pterodactyl/backups/b.tar.gz")
        );
        let c =
            parse("token: tttttttttttt\nsystem:\n  backup_directory: /b\n  log_directory: /l\n")
                .unwrap();
        assert_eq!(
            c.system.keep.backup_file("s", "b"),
            PathBuf::from("/b/b.tar.gz")
        );
        assert_eq!(
            c.system.keep.install_log("s"),
            PathBuf::from("/l/install/s.log")
        );
    }
}
