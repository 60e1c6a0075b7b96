# package.cmake - the Debian package: `cpack -G DEB` in the build directory
# makes kiroku_VERSION_ARCH.deb with
#   /usr/bin/kiroku
#   /lib/systemd/system/kiroku.service   deploy/kiroku.service, run as the user kiroku
#   /etc/kiroku/kiroku.toml              `kiroku config example`, a conffile
# and maintainer scripts (deploy/debian/) that create the system user kiroku
# and its data directory /var/lib/kiroku (postinst), and remove both on purge
# (postrm). scripts/test-package.sh builds, installs, runs and purges it.

# The config file, written by the binary just built: every option at its
# default, from the option table (so the file cannot drift from the flags).
set(KIROKU_PACKAGE_DIR ${PROJECT_BINARY_DIR}/package)
add_custom_command(
  OUTPUT ${KIROKU_PACKAGE_DIR}/kiroku.toml
  COMMAND ${CMAKE_COMMAND} -E make_directory ${KIROKU_PACKAGE_DIR}
  COMMAND $<TARGET_FILE:kiroku> config example > ${KIROKU_PACKAGE_DIR}/kiroku.toml
  DEPENDS kiroku
  COMMENT "kiroku config example > package/kiroku.toml"
  VERBATIM)
add_custom_target(kiroku_package_config ALL DEPENDS ${KIROKU_PACKAGE_DIR}/kiroku.toml)

# The unit of deploy/ with the package's paths and user.
file(READ ${PROJECT_SOURCE_DIR}/deploy/kiroku.service KIROKU_UNIT)
string(REPLACE "/usr/local/bin/kiroku" "/usr/bin/kiroku" KIROKU_UNIT "${KIROKU_UNIT}")
string(REPLACE "DynamicUser=yes" "User=kiroku\nGroup=kiroku" KIROKU_UNIT "${KIROKU_UNIT}")
string(REGEX REPLACE "^# systemd unit for kiroku[^\n]*\n#[^\n]*\n"
       "# systemd unit for kiroku, installed by the Debian package (not started):\n# edit /etc/kiroku/kiroku.toml, then: systemctl enable --now kiroku\n"
       KIROKU_UNIT "${KIROKU_UNIT}")
file(CONFIGURE OUTPUT ${KIROKU_PACKAGE_DIR}/kiroku.service CONTENT "${KIROKU_UNIT}" @ONLY)
file(WRITE ${KIROKU_PACKAGE_DIR}/conffiles "/etc/kiroku/kiroku.toml\n")

install(TARGETS kiroku RUNTIME DESTINATION bin)
install(FILES ${KIROKU_PACKAGE_DIR}/kiroku.service DESTINATION /lib/systemd/system)
install(FILES ${KIROKU_PACKAGE_DIR}/kiroku.toml DESTINATION /etc/kiroku)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kiroku)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "measurement ingestion and file streaming server")
set(CPACK_PACKAGE_DESCRIPTION
    "kiroku takes measurement events over HTTP and persists them in batches to SQLite or MySQL/MariaDB, and streams files to and from S3 or a directory.")
set(CPACK_PACKAGE_CONTACT "kiroku maintainers")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${KIROKU_PACKAGE_DIR}/conffiles ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
