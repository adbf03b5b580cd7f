# Passed to CMake as -DCMAKE_PROJECT_INCLUDE=<this file> when building
# emotion_ros_msgs against ROS 2 from PyPI wheels.
#
# Why: the ros-* wheels are built in a manylinux container, and their exported
# *__rosidl_generator_py targets list include directories under
# /opt/python/cp3XX-cp3XX/ that exist only on the build host. CMake refuses to
# use an imported target whose include directory is missing. At the end of the
# top-level directory we drop those entries from every imported target.
function(emotion_ros_strip_build_host_includes)
  get_property(targets DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(dirs)
      list(FILTER dirs EXCLUDE REGEX "^/opt/python/")
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${dirs}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL emotion_ros_strip_build_host_includes)
