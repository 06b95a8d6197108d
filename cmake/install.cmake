# `cmake --install`: the layout an operator expects (GNUInstallDirs).
# Configs go to the absolute sysconfdir: with prefix /usr that is /etc.

install(TARGETS fluidmemd fluidmemctl fluidmem-run fault-storm
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS fluidmem
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_SKIP COMPONENT lib)
install(TARGETS fluidmem
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_ONLY COMPONENT dev)
install(TARGETS fluidmem-preload LIBRARY DESTINATION ${FM_PRELOAD_INSTALL_DIR})
install(FILES src/client/fluidmem.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

configure_file(packaging/pkgconfig/fluidmem.pc.in ${CMAKE_BINARY_DIR}/fluidmem.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/fluidmem.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# /etc/fluidmem/fluidmemd.toml is the embedded-store config the unit starts
# with; memcached.toml is the remote-store sample to copy over it.
install(FILES configs/local.toml DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/fluidmem
        RENAME fluidmemd.toml)
install(FILES configs/memcached.toml DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/fluidmem)

install(FILES packaging/bash-completion/fluidmemctl
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)

configure_file(packaging/systemd/fluidmemd.service.in ${CMAKE_BINARY_DIR}/fluidmemd.service @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/fluidmemd.service DESTINATION ${FM_SYSTEMD_UNITDIR})

add_subdirectory(docs/man)
