# cnf_add_plugin(<target> SOURCES <src>... [LIBRARIES <lib>...] [OUTPUT_DIRECTORY <dir>] [NO_INSTALL])
#
# Builds one cnf plugin: a MODULE library with hidden visibility named <target>.so
# (no "lib" prefix), installed to <libdir>/cnf/plugins. The loader finds a plugin by
# the name in its descriptor, so the file name is only a convention:
# cnf-<part>-<name>.so, e.g. cnf-ipam-host-local.so.
include_guard(GLOBAL)
include(GNUInstallDirs)
if(NOT DEFINED CNF_PLUGIN_INSTALL_DIR)
  set(CNF_PLUGIN_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cnf/plugins")
endif()

function(cnf_add_plugin target)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "cnf_add_plugin(${target}): SOURCES is required")
  endif()
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE cnf::cnf ${ARG_LIBRARIES})
  set_target_properties(${target} PROPERTIES
    PREFIX ""
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}")
  elseif(DEFINED CNF_PLUGIN_BUILD_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${CNF_PLUGIN_BUILD_DIR}")
  endif()
  # Plugins must not leave undefined symbols for the host to satisfy.
  target_link_options(${target} PRIVATE -Wl,--no-undefined)
  set_property(GLOBAL APPEND PROPERTY CNF_PLUGIN_TARGETS ${target})
  if(NOT ARG_NO_INSTALL)
    install(TARGETS ${target} LIBRARY DESTINATION ${CNF_PLUGIN_INSTALL_DIR})
  endif()
endfunction()
